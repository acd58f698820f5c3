"""Redfish driver on sushy.

TLS verification is on unless the inventory turns it off (``verify_tls: false``, with
a warning); ``ca_file`` trusts a site CA or a BMC's self-signed certificate. sushy's own
retries are kept to the minimum (see ``_connect``) because the controller decides what
to retry, and a library re-sending a power command after we gave up on it would undo
a later command. Basic auth is used rather than Redfish sessions: it needs no
session bookkeeping across threads and works on every BMC we target.

One HTTP(S) connection per BMC is kept open for the driver's life (the controller's
operations on one node: power off, boot device, power on and their read-backs), so a
node costs one TLS handshake instead of one per request. sushy asks for
``Connection: close`` on every request by default (some BMCs are said to choke on
long-lived connections); ours live only as long as a controller, and a connection the
BMC dropped is noticed by urllib3 before reuse, or fails the attempt, which drops the
connection and is retried on a new one.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc

from .base import (
    BMCAuthError,
    BMCCommandError,
    BMCConfigError,
    BMCError,
    BMCTimeout,
    BMCUnavailable,
    BootDevice,
    BootOverride,
    Identity,
    PowerAction,
    PowerState,
    scrub,
)

log = logging.getLogger(__name__)

_TARGETS = {BootDevice.PXE: sushy.BootSource.PXE, BootDevice.DISK: sushy.BootSource.HDD}
_DEVICES = {v.value: k for k, v in _TARGETS.items()}
# Reset types to use for each action, best first; the BMC's AllowableValues decide.
_RESET_CHOICES: dict[PowerAction, tuple[sushy.ResetType, ...]] = {
    PowerAction.ON: (sushy.ResetType.ON, sushy.ResetType.FORCE_ON),
    PowerAction.OFF: (sushy.ResetType.FORCE_OFF,),
    PowerAction.SOFT_OFF: (sushy.ResetType.GRACEFUL_SHUTDOWN,),
    PowerAction.CYCLE: (sushy.ResetType.POWER_CYCLE, sushy.ResetType.FORCE_RESTART),
    PowerAction.RESET: (sushy.ResetType.FORCE_RESTART, sushy.ResetType.GRACEFUL_RESTART),
}


class RedfishDriver:
    """Single-attempt Redfish operations on one ComputerSystem of one BMC."""

    def __init__(
        self,
        node: str,
        base_url: str,
        username: str,
        password: str,
        *,
        verify: bool | str,
        system_id: str | None,
        expected_uuid: str | None,
        timeout: float,
    ) -> None:
        self.node = node
        self.endpoint = base_url
        self._base_url = base_url
        self._username = username
        self._password = password
        self._verify = verify
        self._system_id = system_id
        self._expected_uuid = expected_uuid
        self._timeout = timeout
        self._root: sushy.Sushy | None = None
        self._system: Any = None

    # -- connection ---------------------------------------------------------------------
    def _translate(self, action: str, exc: Exception) -> BMCError:
        text = scrub(str(exc), self._password)
        if isinstance(exc, BMCError):
            return exc
        if isinstance(exc, sushy_exc.AccessError) and getattr(exc, "status_code", None) in (401, 403):
            return BMCAuthError(
                self.node, self.endpoint, action, "authentication failed (user or password wrong)"
            )
        if isinstance(exc, sushy_exc.ConnectionError):
            cause = exc.__cause__ or exc.__context__
            chain = f"{text} {cause!r}"
            if "CERTIFICATE_VERIFY_FAILED" in chain or isinstance(
                cause, requests.exceptions.SSLError | ssl.SSLError
            ):
                return BMCConfigError(
                    self.node,
                    self.endpoint,
                    action,
                    "TLS certificate not trusted; give bmc.ca_file (the BMC's CA or "
                    "certificate) or set bmc.verify_tls: false",
                )
            if "timed out" in chain.lower() or "timeout" in chain.lower():
                return BMCTimeout(self.node, self.endpoint, action, "no answer within the timeout")
            return BMCUnavailable(self.node, self.endpoint, action, "cannot connect to the BMC")
        if isinstance(exc, sushy_exc.HTTPError):
            status = getattr(exc, "status_code", None) or 0
            transient = status >= 500 or status in (408, 409, 429)
            return BMCCommandError(
                self.node, self.endpoint, action, f"HTTP {status}: {text}", transient=transient
            )
        if isinstance(exc, sushy_exc.InvalidParameterValueError | sushy_exc.MissingAttributeError):
            return BMCCommandError(self.node, self.endpoint, action, text, transient=False)
        if isinstance(exc, requests.exceptions.Timeout):
            return BMCTimeout(self.node, self.endpoint, action, "no answer within the timeout")
        return BMCUnavailable(self.node, self.endpoint, action, f"{type(exc).__name__}: {text}")

    def _connect(self, action: str) -> Any:
        if self._system is not None:
            return self._system
        try:
            connector = sushy_connector.Connector(
                self._base_url,
                verify=self._verify,
                # 0 would mean "3 retries, 2 s apart" for connection errors (sushy uses
                # `or 3`), re-sending a POST we already gave up on; 1 means no retry on
                # connection errors and one immediate retry of a 5xx answer.
                server_side_retries=1,
                server_side_retries_delay=0,
                default_request_timeout=self._timeout,
                connect_timeout=self._timeout,
            )
            # sushy sets "Connection: close" on its session; keep the connection instead
            # (see the module docstring). The session is sushy's requests.Session.
            session = connector._session
            session.headers["Connection"] = "keep-alive"
            # requests reads the environment (proxy variables, CA bundle) again on every
            # request, which was a third of the client's CPU per request; resolve it once.
            env = session.merge_environment_settings(self._base_url, {}, None, self._verify, None)
            session.trust_env = False
            session.proxies.update(env["proxies"])
            connector._verify = env["verify"]
            root = sushy.Sushy(
                self._base_url,
                auth=sushy_auth.BasicAuth(username=self._username, password=self._password),
                connector=connector,
            )
            self._root = root
            self._system = self._choose_system(root, action)
        except Exception as exc:
            self.reset_session()
            raise self._translate(action, exc) from None
        return self._system

    def _choose_system(self, root: sushy.Sushy, action: str) -> Any:
        """The ComputerSystem of this node: by inventory ``system_id``, the only one, or by UUID."""
        if self._system_id:
            return root.get_system(f"{root.get_system_collection().path.rstrip('/')}/{self._system_id}")
        collection = root.get_system_collection()
        paths = list(collection.members_identities)
        if len(paths) == 1:
            return root.get_system(paths[0])
        if self._expected_uuid:
            for path in paths:
                system = root.get_system(path)
                if (system.uuid or "").lower() == self._expected_uuid.lower():
                    return system
        raise BMCConfigError(
            self.node,
            self.endpoint,
            action,
            f"the BMC manages {len(paths)} systems; set bmc.system_id in the inventory "
            f"(found: {', '.join(p.rstrip('/').rsplit('/', 1)[-1] for p in paths)})",
        )

    def _fail(self, action: str, exc: Exception) -> BMCError:
        """Translate; drop the connection unless the BMC answered (an HTTP error keeps it)."""
        if not isinstance(exc, sushy_exc.HTTPError | BMCError):
            self.reset_session()
        return self._translate(action, exc)

    def _fresh(self, action: str) -> Any:
        system = self._connect(action)
        try:
            system.refresh(force=True)
        except Exception as exc:
            raise self._fail(action, exc) from None
        return system

    def reset_session(self) -> None:
        root, self._root, self._system = self._root, None, None
        if root is not None:
            try:
                root.close()
            except Exception:  # dropping a connection that already failed
                log.debug("closing Redfish connection to %s failed", self.endpoint, exc_info=True)

    def close(self) -> None:
        self.reset_session()

    # -- operations ---------------------------------------------------------------------
    def power_state(self) -> PowerState:
        system = self._fresh("power status")
        return PowerState.ON if system.power_state == sushy.PowerState.ON else PowerState.OFF

    def power(self, action: PowerAction) -> None:
        name = f"power {action.value}"
        system = self._connect(name)
        try:
            allowed = system.get_allowed_reset_system_values()
            choice = next((r for r in _RESET_CHOICES[action] if r in allowed), None)
            if choice is None:
                raise BMCCommandError(
                    self.node,
                    self.endpoint,
                    name,
                    f"the BMC offers no reset type for it (allowed: "
                    f"{', '.join(sorted(r.value for r in allowed))})",
                    transient=False,
                )
            system.reset_system(choice)
        except Exception as exc:
            raise self._fail(name, exc) from None

    def boot_override(self) -> BootOverride:
        system = self._fresh("read boot device")
        boot = system.boot
        enabled = boot.enabled
        device = _DEVICES.get(boot.target.value) if boot.target is not None else None
        if enabled == sushy.BootSourceOverrideEnabled.DISABLED:
            device = None
        return BootOverride(
            device,
            enabled == sushy.BootSourceOverrideEnabled.CONTINUOUS,
            boot.mode == sushy.BootSourceOverrideMode.UEFI,
        )

    def set_boot_override(self, device: BootDevice, persistent: bool, uefi: bool) -> None:
        name = f"set boot device {device.value}"
        system = self._connect(name)
        enabled = (
            sushy.BootSourceOverrideEnabled.CONTINUOUS if persistent else sushy.BootSourceOverrideEnabled.ONCE
        )
        mode = sushy.BootSourceOverrideMode.UEFI if uefi else sushy.BootSourceOverrideMode.LEGACY
        try:
            system.set_system_boot_options(target=_TARGETS[device], enabled=enabled, mode=mode)
        except Exception as exc:
            raise self._fail(name, exc) from None

    def identity(self) -> Identity:
        system = self._fresh("read identity")
        macs: list[str] = []
        try:
            for nic in system.ethernet_interfaces.get_members():
                if nic.mac_address:
                    macs.append(nic.mac_address.lower())
        except Exception as exc:  # some BMCs do not report NICs: identity without MACs
            log.debug("node %s: BMC %s reports no NICs: %s", self.node, self.endpoint, type(exc).__name__)
        return Identity(
            uuid=system.uuid,
            serial=system.serial_number,
            vendor=system.manufacturer,
            model=system.model,
            macs=tuple(macs),
        )


def base_url(scheme: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"
