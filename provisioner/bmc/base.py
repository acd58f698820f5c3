"""The BMC interface every stage uses: power, boot device, identity, and typed errors.

Vendors differ (IPMI or Redfish, cipher suites, reset types, which system on a
multi-node BMC); drivers hide that behind ``Driver``. ``BMCController`` (controller.py)
adds what hardware needs from any driver: timeouts, retries of transient faults only,
pacing and verify-after-set. Errors say which node, which BMC and what failed, and
never contain the password.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ..errors import OperationError

# IPMI cipher suites with authentication and integrity: 17 (HMAC-SHA256, AES-CBC-128) and
# 3 (HMAC-SHA1, AES-CBC-128). Suite 0 has none: anyone on the BMC network could act as the tool.
IPMI_CIPHER_SUITES = (3, 17)


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"


class BootDevice(StrEnum):
    PXE = "pxe"
    DISK = "disk"


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"  # hard: cut power now
    SOFT_OFF = "soft-off"  # ACPI shutdown request to the OS
    CYCLE = "cycle"
    RESET = "reset"


@dataclass(frozen=True)
class BootOverride:
    """The boot override a BMC reports; ``device`` None means "no override set"."""

    device: BootDevice | None
    persistent: bool
    uefi: bool


@dataclass(frozen=True)
class Identity:
    """What the BMC says about its machine; None where this BMC does not report it."""

    uuid: str | None = None
    serial: str | None = None
    vendor: str | None = None
    model: str | None = None
    macs: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "uuid": self.uuid,
            "serial": self.serial,
            "vendor": self.vendor,
            "model": self.model,
            "macs": list(self.macs),
        }


class BMCError(OperationError):
    """A BMC operation failed. ``transient`` says whether retrying may help."""

    transient = True

    def __init__(self, node: str, endpoint: str, action: str, reason: str) -> None:
        self.node, self.endpoint, self.action, self.reason = node, endpoint, action, reason
        super().__init__(f"node {node}: BMC {endpoint}: {action} failed: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its class, message and fields: a BMC worker process hands it to the run
        typed (``provisioner.workflow.bmcprocs``); the default would call ``__init__`` with the
        message alone."""
        return (_restore_error, (type(self), self.args, dict(self.__dict__)))


def _restore_error(cls: type[BMCError], args: tuple[Any, ...], state: dict[str, Any]) -> BMCError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class BMCAuthError(BMCError):
    """Wrong user or password (or privilege): retrying would only lock the account."""

    transient = False


class BMCTimeout(BMCError):
    """No answer within the command timeout."""


class BMCUnavailable(BMCError):
    """The BMC cannot be reached or is refusing service (connection, TLS, busy)."""


class BMCVerifyError(BMCError):
    """The BMC acknowledged a change but the state read back does not match."""


class BMCCommandError(BMCError):
    """The BMC answered with an error. Transient or not depending on the error."""

    def __init__(self, node: str, endpoint: str, action: str, reason: str, transient: bool) -> None:
        super().__init__(node, endpoint, action, reason)
        self.transient = transient


class BMCConfigError(BMCError):
    """The inventory does not match what the BMC offers (no such system, TLS refused...)."""

    transient = False


class Driver(Protocol):
    """One protocol's single-attempt operations; raise ``BMCError`` subclasses only."""

    endpoint: str

    def power_state(self) -> PowerState: ...

    def power(self, action: PowerAction) -> None: ...

    def boot_override(self) -> BootOverride: ...

    def set_boot_override(self, device: BootDevice, persistent: bool, uefi: bool) -> None: ...

    def identity(self) -> Identity: ...

    def reset_session(self) -> None:
        """Forget the session so the next call logs in again (after a failure)."""
        ...

    def close(self) -> None: ...


def scrub(text: str, secret: str) -> str:
    """Remove a secret from text that came from a library (belt and braces)."""
    return text.replace(secret, "********") if secret else text
