"""Redfish: its inventory settings and its registration. The driver is ``redfish.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from .base import BMCConfigError, Driver
from .registry import DriverRequest, Registration, register
from .settings import BMCProtocol, BMCSettings

log = logging.getLogger(__name__)


class RedfishSettings(BMCSettings):
    protocol: Literal[BMCProtocol.REDFISH] = BMCProtocol.REDFISH
    verify_tls: bool = True
    ca_file: str | None = None
    scheme: Literal["https", "http"] = "https"
    system_id: str | None = None  # which ComputerSystem, when the BMC has several
    # http sends the BMC password in clear (Basic auth): only when the operator says so.
    allow_insecure_http: bool = False

    @model_validator(mode="after")
    def _http_needs_consent(self) -> RedfishSettings:
        if self.scheme == "http" and not self.allow_insecure_http:
            raise ValueError(
                "scheme http sends the BMC user and password in clear on the network; use https, "
                "or set allow_insecure_http: true to accept that"
            )
        return self

    def default_port(self) -> int:
        return 443 if self.scheme == "https" else 80


def tls_verify(s: RedfishSettings, base_dir: Path) -> bool | str:
    """What to hand to requests: a CA path, True (system CAs) or False (insecure)."""
    if not s.verify_tls:
        return False
    if s.ca_file:
        path = Path(s.ca_file)
        return str(path if path.is_absolute() else base_dir / path)
    return True


_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _factory(req: DriverRequest) -> Driver:
    from .redfish import RedfishDriver, base_url  # lazy: sushy loads only when a Redfish node is driven

    s = req.settings
    assert isinstance(s, RedfishSettings)
    url = base_url(s.scheme, s.address, s.effective_port)
    if s.scheme == "http":
        _warn_once(
            url,
            "node %s: BMC %s is reached over plain http (bmc.allow_insecure_http: true): "
            "its user and password cross the network in clear",
            req.node,
            url,
        )
    verify = tls_verify(s, req.base_dir)
    if s.scheme == "https" and verify is False:
        _warn_once(
            url,
            "node %s: TLS verification of BMC %s is disabled (inventory bmc.verify_tls: false); "
            "its identity is not checked",
            req.node,
            url,
        )
    if isinstance(verify, str) and not Path(verify).is_file():
        raise BMCConfigError(req.node, url, "connect", f"bmc.ca_file {verify} does not exist")
    return RedfishDriver(
        req.node,
        url,
        s.username,
        req.password,
        verify=verify,
        system_id=s.system_id,
        expected_uuid=req.expected_uuid,
        timeout=req.timeout,
    )


REDFISH = register(
    Registration(
        name=BMCProtocol.REDFISH.value,
        settings=RedfishSettings,
        factory=_factory,
        features=frozenset({"power", "boot-device", "identity", "tls"}),
        lab_emulator="redfish",
    )
)

__all__ = ["REDFISH", "RedfishSettings", "tls_verify"]
