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

Round trips: the protocol minimum is the service root once per connection, then two requests per
verified operation (the action or PATCH, one GET of the system). What a BMC's ComputerSystem *is*
(its URI, its action targets and allowable values, which Boot properties it has) does not change
while a run drives it, so it is learnt once per process (``_KNOWN``): a later connection to the same
BMC neither reads the Systems collection nor the system before acting. The system's URI comes from
the service root's ``Systems`` link and the inventory's ``system_id``; before the system was ever
read, a reset goes to the action URI the Redfish specification fixes (``<system>/Actions/
ComputerSystem.Reset``) with the preferred reset type, and only a BMC that refuses it (HTTP 400)
is asked for its allowable values. State (power, boot override) is always read fresh.
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc
from sushy.resources import base as sushy_base
from sushy.resources.system import system as sushy_system

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


_RESET_ACTION = "Actions/ComputerSystem.Reset"  # DSP0266: <resource URI>/Actions/<qualified name>


@dataclass(frozen=True)
class _Known:
    """What a BMC's ComputerSystem is (its URI and its last document, for the action targets,
    allowable values and Boot properties it lists), not its state."""

    path: str
    doc: dict[str, Any]


# (base URL, inventory system_id, inventory UUID) -> the system as learnt in this process; dropped
# when acting on it fails, so a BMC that changed (a test's emulator reusing a port) is rediscovered.
_KNOWN: dict[tuple[str, str | None, str | None], _Known] = {}
_KNOWN_LOCK = threading.Lock()


# What requests takes from the environment for a BMC (proxies, CA bundle), by (base URL, verify).
# The environment does not change while a run runs, and reading it (every variable decoded, the
# no_proxy patterns matched) cost more than a Redfish request's own parsing, per connection.
# With no proxy variable at all the answer is the same for every URL: one entry serves them all.
_ENVIRONMENT: dict[tuple[str, bool | str], dict[str, Any]] = {}
_PROXY_VARIABLES: dict[str, str] | None = None


def _environment(session: requests.Session, url: str, verify: bool | str) -> dict[str, Any]:
    global _PROXY_VARIABLES
    if _PROXY_VARIABLES is None:
        _PROXY_VARIABLES = urllib.request.getproxies()
    key = (url if _PROXY_VARIABLES else "", verify)
    env = _ENVIRONMENT.get(key)
    if env is None:
        env = _ENVIRONMENT[key] = session.merge_environment_settings(url, {}, None, verify, None)
    return {"proxies": dict(env["proxies"]), "verify": env["verify"]}


class _RememberingReader(sushy_base.JsonDataReader):
    """sushy's reader, keeping the headers of its last GET (see ``_System``)."""

    headers: Any = None

    def get_data(self) -> Any:
        data = super().get_data()
        self.headers = data._headers
        return data


class _System(sushy_system.System):
    """sushy's System, minus one request per PATCH: sushy GETs the system again only to learn its
    ETag for ``If-Match``; the read-back that verified the previous step already brought it. A
    system built from what an earlier connection learnt has no ETag yet: its PATCH goes without
    ``If-Match`` (optional in Redfish; sushy itself retries a stale one without it)."""

    def _get_headers(self) -> Any:
        headers = getattr(self._reader, "headers", None)
        return headers if headers is not None else {}


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
        self._system: Any = None  # the sushy System, once its document is known
        self._path: str | None = None  # the system's URI (known before its document may be)
        self._learnt = False  # the URI came from ``_KNOWN`` (not from this connection's root)

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

    @property
    def _key(self) -> tuple[str, str | None, str | None]:
        return (self._base_url, self._system_id, (self._expected_uuid or "").lower() or None)

    def _learn(self, system: Any) -> None:
        """Remember what the system is (after a successful GET of it) for later connections."""
        with _KNOWN_LOCK:
            _KNOWN[self._key] = _Known(system.path, system.json)

    def _forget(self) -> None:
        with _KNOWN_LOCK:
            _KNOWN.pop(self._key, None)

    def _connect(self, action: str) -> str:
        """The connection (one GET of the service root) and the system's URI; the sushy System is
        built from what this process already learnt of it, or left for the first read."""
        if self._path is not None:
            return self._path
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
            # request, which was a third of the client's CPU per request; resolve it once
            # (``_environment``).
            env = _environment(session, self._base_url, self._verify)
            session.trust_env = False
            session.proxies.update(env["proxies"])
            connector._verify = env["verify"]
            root = sushy.Sushy(
                self._base_url,
                auth=sushy_auth.BasicAuth(username=self._username, password=self._password),
                connector=connector,
            )
            self._root = root
            with _KNOWN_LOCK:
                known = _KNOWN.get(self._key)
            self._learnt = known is not None
            if known is not None:
                self._path = known.path
                self._system = self._system_object(known.path, known.doc)
            elif self._system_id and getattr(root, "_systems_path", None):
                self._path = f"{root._systems_path.rstrip('/')}/{self._system_id}"
            else:
                self._system = self._choose_system(root, action)
                self._path = self._system.path
                self._learn(self._system)
        except Exception as exc:
            self.reset_session()
            raise self._translate(action, exc) from None
        assert self._path is not None
        return self._path

    def _system_object(self, path: str, doc: dict[str, Any] | None = None) -> Any:
        """sushy's System at ``path``: from ``doc`` without a request, else read (one GET)."""
        root = self._root
        assert root is not None
        # System's own __init__ only hands its arguments to ResourceBase's, which alone takes a
        # document (and then sends nothing) and a reader.
        system = _System.__new__(_System)
        sushy_base.ResourceBase.__init__(
            system,
            root._conn,
            path,
            redfish_version=root.redfish_version,
            registries=root.lazy_registries,
            reader=_RememberingReader(),
            json_doc=doc,
            root=root,
        )
        return system

    def _document(self, action: str) -> Any:
        """The sushy System with a document (read now if this process never read it)."""
        path = self._connect(action)
        if self._system is None:
            try:
                self._system = self._system_object(path)
            except Exception as exc:
                raise self._fail(action, exc) from None
            self._learn(self._system)
        return self._system

    def _choose_system(self, root: sushy.Sushy, action: str) -> Any:
        """The ComputerSystem of this node: by inventory ``system_id``, the only one, or by UUID."""
        if self._system_id:  # a service root without a Systems link: ask for the collection
            return self._system_object(f"{root.get_system_collection().path.rstrip('/')}/{self._system_id}")
        collection = root.get_system_collection()
        paths = list(collection.members_identities)
        if len(paths) == 1:
            return self._system_object(paths[0])
        if self._expected_uuid:
            for path in paths:
                system = self._system_object(path)
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
        if isinstance(exc, sushy_exc.ResourceNotFoundError) and self._learnt:
            # Not where this process learnt it is (the BMC changed): forget it; the retry rediscovers.
            self._forget()
            self.reset_session()
            return BMCUnavailable(self.node, self.endpoint, action, "the system moved; looking it up again")
        return self._translate(action, exc)

    def _fresh(self, action: str) -> Any:
        """The system with its current state: one GET."""
        path = self._connect(action)
        try:
            if self._system is None:
                self._system = self._system_object(path)
            else:
                self._system.refresh(force=True)
        except Exception as exc:
            raise self._fail(action, exc) from None
        self._learn(self._system)
        return self._system

    def reset_session(self) -> None:
        root, self._root, self._system, self._path = self._root, None, None, None
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
        path = self._connect(name)
        if self._system is None:  # never read in this process: the standard action URI
            try:
                self._root._conn.post(  # type: ignore[union-attr]
                    f"{path}/{_RESET_ACTION}", data={"ResetType": _RESET_CHOICES[action][0].value}
                )
                return
            except sushy_exc.BadRequestError:
                pass  # not a reset type (or not the URI) this BMC takes: ask it, below
            except Exception as exc:
                raise self._fail(name, exc) from None
        system = self._document(name)
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
        system = self._document(name)
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
