"""What every BMC's inventory settings have in common; each protocol subclasses it with its own.

bmclib's lesson: a provider owns its options. The inventory's ``nodes[].bmc`` is one member of
a union discriminated by ``protocol``: the IPMI member owns ``cipher_suite``, the Redfish member
``verify_tls``, ``ca_file``, ``scheme``, ``system_id`` and ``allow_insecure_http``. The members
are the settings models registered in ``registry``, so a new protocol adds its member there
without touching the inventory model.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..secretref import SecretReference

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class BMCProtocol(StrEnum):
    """The protocols built into the tool (others may be registered, see ``registry``)."""

    IPMI = "ipmi"
    REDFISH = "redfish"


class BMCSettings(BaseModel):
    """The fields every protocol has. Unknown keys are errors, as everywhere in the inventory."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    protocol: str
    address: str  # IP or DNS name
    port: int | None = Field(default=None, ge=1, le=65535)  # default: the protocol's
    username: str
    password: SecretReference

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v.strip()))
        except ValueError:
            if _HOSTNAME.match(v.lower()):
                return v.lower()
            raise ValueError(f"{v!r} is neither an IP address nor a host name") from None

    def default_port(self) -> int:
        """The port this protocol listens on when the inventory gives none."""
        raise NotImplementedError

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else self.default_port()

    @property
    def endpoint(self) -> str:
        return f"{self.protocol}://{self.address}:{self.effective_port}"

    def options(self) -> dict[str, Any]:
        """This protocol's own settings, as ``plan`` shows them (no secrets)."""
        common = set(BMCSettings.model_fields)
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in common}
