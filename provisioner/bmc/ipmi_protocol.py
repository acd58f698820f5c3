"""IPMI 2.0 (lanplus): its inventory settings and its registration. The driver is ``ipmi.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from .base import IPMI_CIPHER_SUITES, Driver
from .registry import DriverRequest, Registration, register
from .settings import BMCProtocol, BMCSettings


class IpmiSettings(BMCSettings):
    protocol: Literal[BMCProtocol.IPMI] = BMCProtocol.IPMI
    # None: propose 17 and fall back to 3 when the BMC only offers 3 (logged as a warning).
    cipher_suite: int | None = None

    @field_validator("cipher_suite")
    @classmethod
    def _suite(cls, v: int | None) -> int | None:
        if v is not None and v not in IPMI_CIPHER_SUITES:
            raise ValueError(
                f"cipher suite {v} is not allowed: use 17 (HMAC-SHA256) or 3 (HMAC-SHA1); "
                "suite 0 has no authentication"
            )
        return v

    def default_port(self) -> int:
        return 623


def _factory(req: DriverRequest) -> Driver:
    from .ipmi import IpmiDriver  # lazy: pyghmi loads only when an IPMI node is driven

    s = req.settings
    assert isinstance(s, IpmiSettings)
    return IpmiDriver(
        req.node, s.address, s.effective_port, s.username, req.password, cipher_suite=s.cipher_suite
    )


IPMI = register(
    Registration(
        name=BMCProtocol.IPMI.value,
        settings=IpmiSettings,
        factory=_factory,
        features=frozenset({"power", "boot-device", "identity", "cipher-suite"}),
        lab_emulator="ipmi",
    )
)
