"""The BMC protocol registry: one entry per protocol, and nothing else picks a protocol.

Each protocol registers its name, its inventory settings model (a ``BMCSettings`` subclass
whose ``protocol`` is a literal of its name), the features it offers, which lab emulator can
stand in for it, and a *lazy* driver factory: the factory imports the driver module (pyghmi,
sushy...) only when a node of that protocol is actually driven, so validating an inventory
never loads a BMC library. Adding a protocol is one driver module plus one ``register`` call
(see ``ipmi_protocol.py``); the inventory, ``connect`` and the lab follow this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidatorFunctionWrapHandler, field_validator

from .base import Driver
from .settings import BMCSettings


@dataclass(frozen=True)
class DriverRequest:
    """What a factory gets to build one node's driver (the password already resolved)."""

    node: str
    settings: BMCSettings
    password: str
    base_dir: Path
    timeout: float  # one command, seconds (inventory ``cluster.timeouts.bmc_command``)
    expected_uuid: str | None = None


DriverFactory = Callable[[DriverRequest], Driver]


@dataclass(frozen=True)
class Registration:
    name: str
    settings: type[BMCSettings]
    factory: DriverFactory
    features: frozenset[str] = frozenset({"power", "boot-device", "identity"})
    # The lab emulator that stands in for this protocol ("ipmi", "redfish"), or None when the
    # lab cannot emulate it.
    lab_emulator: str | None = None


_REGISTRY: dict[str, Registration] = {}


def register(entry: Registration) -> Registration:
    """Add a protocol. Registering a name twice with a different entry is a programming error."""
    known = _REGISTRY.get(entry.name)
    if known is not None and known != entry:
        raise ValueError(f"BMC protocol {entry.name!r} is already registered")
    if entry.settings.model_fields["protocol"].annotation is str:
        raise TypeError(f"{entry.settings.__name__}.protocol must be Literal[{entry.name!r}]")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a protocol (tests that register a toy one clean up with this)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return sorted(_REGISTRY)


def lookup(name: str) -> Registration:
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        raise KeyError(f"no BMC protocol {name!r} is registered (known: {', '.join(names())})") from None


class _Pick(BaseModel):
    """Only the discriminator, so a missing or unknown protocol is reported at ``bmc.protocol``."""

    protocol: str

    @field_validator("protocol")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in _REGISTRY:
            raise ValueError(f"unknown BMC protocol {v!r} (known: {', '.join(names())})")
        return v


def validate_settings(value: Any, handler: ValidatorFunctionWrapHandler) -> BMCSettings:
    """Pydantic wrap validator for ``nodes[].bmc``: the member of the union named by ``protocol``.

    Errors of the member model keep their location (``nodes[3].bmc.cipher_suite``)."""
    if isinstance(value, BMCSettings):
        return value
    if not isinstance(value, dict):
        return handler(value)  # the base model reports "should be a mapping"
    pick = _Pick.model_validate({"protocol": value.get("protocol")} if "protocol" in value else {})
    return lookup(pick.protocol).settings.model_validate(value)
