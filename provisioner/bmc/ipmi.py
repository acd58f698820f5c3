"""IPMI 2.0 (RMCP+ "lanplus") driver on pyghmi's session layer.

Only raw IPMI commands are used, with the encodings of the IPMI 2.0 specification,
because pyghmi's higher-level helpers hide the two bits the provisioner depends on
(boot-flag persistence and EFI) and cannot choose a cipher suite.

Threads: see the note on pyghmi's locks below; with it, 100+ sessions driven from
the fan-out's threads work (tests/bmc/test_faults.py, benchmarks/bench_bmc.py).

Cipher suites: pyghmi always proposes suite 17 (HMAC-SHA256) and assumes the BMC
accepted it. Some BMCs (pyghmi's own server, hence virtualbmc) answer the RMCP+ Open
Session request with suite-3 algorithms instead, and pyghmi then crashes in RAKP2
(``struct.error``). ``_SuiteSession`` reads the algorithms the BMC actually chose:
with the default (no suite configured) it falls back to suite 3, with an explicit
``cipher_suite`` it fails with a clear error.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import uuid as uuidlib
from typing import Any

import pyghmi.exceptions as pyghmi_exc
from pyghmi.ipmi import fru as pyghmi_fru
from pyghmi.ipmi.private import session as pyghmi_session
from pyghmi.ipmi.private import util as pyghmi_util

from .base import (
    IPMI_CIPHER_SUITES,
    BMCAuthError,
    BMCCommandError,
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

# pyghmi's client is one process-global event loop that every calling thread drives.
# It takes its two registry locks in opposite orders (send_payload: keepalive then
# waiting; wait_for_rsp -> _timedout -> send_payload: waiting then keepalive), which
# deadlocks as soon as two threads hit a retransmit at once (seen with 100 nodes and
# injected timeouts). Both are RLocks looked up at call time: making them one lock
# removes the inversion without changing what they protect.
pyghmi_session.WAITING_SESSIONS = pyghmi_session.KEEPALIVE_SESSIONS

# pyghmi's clock is ``os.times()[4]``, its stand-in for ``time.monotonic`` from before Python
# 3.3: a system call in which the kernel sums the CPU time of every thread of the process
# (walking them under a lock), ticking in hundredths of a second. pyghmi reads it about 100
# times per IPMI node, from up to 32 threads at once, in a process of ~100 threads at 1,000
# nodes. pyghmi only ever compares its own readings (deadlines, idle timers), and this runs
# before its I/O thread or any session exists, so every one of them is on the new clock.
pyghmi_util._monotonic_time = time.monotonic
pyghmi_session._monotonic_time = time.monotonic

# Lost wake-ups. A thread waiting for its session's answer sleeps on an event that
# pyghmi's I/O thread sets when a packet from that BMC arrives *after* the wait was
# registered. But the answer may already be there (it arrived while the thread was
# still getting ready to wait), or another thread running the event loop
# (``wait_for_rsp``, e.g. another node's log-in) may have taken it off the session's
# queue and be handling it; the owner then slept until the retransmit timer (0.5-1 s,
# and a needless retransmission) although its answer had come. With 100 BMCs that
# was a few percent of all commands. So:
# - a session's packets are handled under its own lock (``process_pktqueue``): an
#   owner that wakes while another thread handles its answer waits for that, then
#   sees it;
# - before and after registering a wait, the owner checks whether its answer is
#   already queued, handled, or being handled (``_answer_ready``), and then does not
#   sleep;
# - as a backstop no wait lasts longer than ``_MAX_IO_WAIT``: pyghmi's loops re-check
#   their condition and wait again, so a wake-up missed some other way costs at most that.
# A wait also times itself (pyghmi's waits rely on its I/O thread for the deadline,
# which meant waking that thread with a packet to itself on every wait, because its
# own wait was longer: a thread hand-off per IPMI command on a busy process). The I/O
# thread is still woken when it must select() on a socket a new session just added,
# and to drop expired waits if many pile up.
_MAX_IO_WAIT = 0.2
_current = threading.local()  # the session whose command this thread is waiting for
_selected_sockets = 0  # how many sockets the I/O thread was last woken to watch


def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    """pyghmi's ``_io_wait`` (same protocol with its I/O thread) without lost wake-ups."""
    session: _SuiteSession | None = getattr(_current, "session", None)
    if session is not None and myaddr is not None and session._answer_ready(myaddr):
        return
    evt = threading.Event()
    if evq is not None:
        evq.append(evt)
    timeout = max(0.0, min(timeout, _MAX_IO_WAIT))
    queue = pyghmi_session.ioqueue
    queue.append((pyghmi_util._monotonic_time() + timeout, evt, myaddr))
    sockets = pyghmi_session.iosockets
    if len(sockets) != _selected_sockets or len(queue) > 256:
        _wake_io_thread(len(sockets))
    if session is not None and myaddr is not None and session._answer_ready(myaddr):
        return  # it came in between: the I/O thread may not match it to this wait
    evt.wait(timeout)


def _wake_io_thread(sockets: int) -> None:
    global _selected_sockets
    _selected_sockets = sockets
    wakeup = pyghmi_session.iosockets[0]
    wakeup.sendto(b"\x01", (pyghmi_session.myself, wakeup.getsockname()[1]))


pyghmi_session._io_wait = _io_wait

AUTH_HMAC_SHA1 = 1
AUTH_HMAC_SHA256 = 3
SUPPORTED_SUITES = IPMI_CIPHER_SUITES

# IPMI 2.0 table 28-14 (boot flags, parameter 5)
BOOT_FLAG_VALID = 0x80
BOOT_FLAG_PERSISTENT = 0x40
BOOT_FLAG_EFI = 0x20
_DEVICE_CODES = {BootDevice.PXE: 0x1, BootDevice.DISK: 0x2}
_DEVICES = {v: k for k, v in _DEVICE_CODES.items()}
_CHASSIS_CONTROL = {
    PowerAction.OFF: 0,
    PowerAction.ON: 1,
    PowerAction.CYCLE: 2,
    PowerAction.RESET: 3,
    PowerAction.SOFT_OFF: 5,
}
_FRU_CHUNK = 64  # bytes per Read FRU Data request, halved if the BMC says it is too many
# Completion codes worth retrying: busy, timeout, out of space, unspecified.
_TRANSIENT_CODES = {0xC0, 0xC3, 0xC4, 0xFF, 0xFFFF}
_CODE_TEXT = {
    0xC0: "node busy",
    0xC1: "invalid command",
    0xC3: "timeout",
    0xC9: "parameter out of range",
    0xCA: "cannot return the number of requested data bytes",
    0xCB: "requested data not present",
    0xCC: "invalid data field",
    0xD4: "insufficient privilege",
    0xD5: "not supported in present state",
    0xFF: "unspecified error",
}


class _SuiteSession(pyghmi_session.Session):
    """pyghmi session that honours a cipher suite choice (class attribute ``suite``)."""

    suite: int | None = None
    downgraded_from_17: int | None = None  # the algorithm the BMC chose instead of suite 17's
    _pktlock: threading.RLock
    _expecting: tuple[int, int] | None = None  # (netfn, command) of the answer awaited
    _bmc_keys: list[Any]  # the BMC's addresses as pyghmi files them (``_LAST_SOCKET``)

    def __new__(
        cls,
        bmc: str,
        userid: str,
        password: str,
        port: int = 623,
        kg: Any = None,
        onlogon: Any = None,
        privlevel: Any = None,
        keepalive: bool = True,
    ) -> _SuiteSession:
        # pyghmi hands out an existing session when bmc/user/password/port match, and
        # caches half-initialised ones under a key it never deletes (str vs bytes); a
        # failed login then poisons later logins. Each driver owns its session instead.
        # Sockets already used by a session to the same BMC are excluded, because
        # pyghmi routes replies by (BMC address, local port).
        self = object.__new__(cls)
        forbid: list[Any] = []
        self._bmc_keys = []
        for res in socket.getaddrinfo(bmc, port, 0, socket.SOCK_DGRAM):
            sockaddr: Any = res[4]
            if pyghmi_session.ipv6support and res[0] == socket.AF_INET:
                sockaddr = ("::ffff:" + sockaddr[0], sockaddr[1], 0, 0)
            forbid.extend(s.socket for s in list(cls.bmc_handlers.get(sockaddr, {}).values()))
            # Both forms: pyghmi decides on IPv6 (mapped addresses) at its first socket.
            self._bmc_keys += [res[4], sockaddr]
            with _LAST_SOCKET_LOCK:
                last = _LAST_SOCKET.get(sockaddr)
            if last is not None:
                forbid.append(last)
        self.forbidsock = forbid
        self._pktlock = threading.RLock()
        self._expecting = None
        return self

    def __init__(self, bmc: str, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(bmc, *args, **kwargs)
        finally:  # logged in or not, this UDP port has now carried a session to the BMC
            sock = getattr(self, "socket", None)
            if sock is not None:
                with _LAST_SOCKET_LOCK:
                    for key in self._bmc_keys:
                        _LAST_SOCKET[key] = sock

    # -- lost wake-ups (see _io_wait) --------------------------------------------------
    def process_pktqueue(self) -> None:
        with self._pktlock:  # one thread at a time handles this session's packets
            super().process_pktqueue()

    def raw_command(self, netfn: int, command: int, *args: Any, **kwargs: Any) -> Any:
        outer = getattr(_current, "session", None), self._expecting
        _current.session, self._expecting = self, (netfn + 1, command)
        try:
            return super().raw_command(netfn, command, *args, **kwargs)
        finally:
            _current.session, self._expecting = outer

    def _answer_ready(self, sockaddr: Any) -> bool:
        """Whether the answer this session awaits is queued, handled or being handled."""
        if not self.awaitingresponse or self._expecting is None or sockaddr != self.sockaddr:
            return False
        if self.pktqueue:
            return True
        if not pyghmi_session.unmatched(self.lastresponse, *self._expecting):
            return True
        if self._pktlock.acquire(blocking=False):
            self._pktlock.release()
            return False
        return True  # another thread is handling one of our packets right now

    def _initsession(self) -> None:
        super()._initsession()
        if self.suite == 3:
            self.attemptedhash = 1

    def _got_rmcp_response(self, data: Any) -> Any:
        # Open Session Response: the authentication algorithm the BMC chose is byte 16.
        if (
            self.sessioncontext == "OPENSESSION"
            and len(data) >= 17
            and data[1] == 0
            and data[0] == self.rmcptag
        ):
            proposed = AUTH_HMAC_SHA256 if self.attemptedhash == 256 else AUTH_HMAC_SHA1
            chosen = data[16]
            if chosen != proposed:
                if self.suite is None and proposed == AUTH_HMAC_SHA256:
                    # The driver logs this as a warning naming the node once the login is done.
                    self.downgraded_from_17 = chosen
                    self.attemptedhash = 1
                    self._open_rmcpplus_request()
                    return None
                self.onlogon(
                    {
                        "error": f"BMC does not support cipher suite {self.suite or 3} "
                        f"(it chose authentication algorithm {chosen})"
                    }
                )
                return -9
        return super()._got_rmcp_response(data)

    def _got_rakp2(self, data: Any) -> Any:
        try:
            return super()._got_rakp2(data)
        except struct.error:
            self.onlogon({"error": "malformed RAKP2 (cipher suite mismatch)"})
            return -9


# The UDP socket of the last session to each BMC (by its address as pyghmi keys it). A new session
# to a BMC never starts from the port of the previous one: a BMC that still holds the old session
# (its Close Session lost, or not yet processed) and files sessions by client address and port, as
# pyghmi's server (hence virtualbmc) does, takes the new log-in's packets for that session. With a
# node's BMC visits kept short (off, PXE once and on back to back), every session of a run shares one
# or two client ports (pyghmi's log-out counts a socket's release twice); with this, a second visit
# comes from another port. (The lab's emulator copes with either: ``lab/ipmi_bmc.py``. The log-in
# time-outs a 1,000-node fleet once showed were the emulator's lost wake-ups, fixed there.)
_LAST_SOCKET: dict[Any, Any] = {}
_LAST_SOCKET_LOCK = threading.Lock()


def _session_class(suite: int | None) -> type[_SuiteSession]:
    return _SESSION_CLASSES[suite]


_SESSION_CLASSES: dict[int | None, type[_SuiteSession]] = {
    s: type(f"_Suite{s or 'Auto'}Session", (_SuiteSession,), {"suite": s}) for s in (None, 3, 17)
}


class _CompletionCodeError(BMCCommandError):
    """The BMC answered with a completion code other than success."""

    def __init__(
        self, node: str, endpoint: str, action: str, reason: str, transient: bool, code: int
    ) -> None:
        super().__init__(node, endpoint, action, reason, transient)
        self.code = code


class IpmiDriver:
    """Single-attempt IPMI operations on one BMC; one RMCP+ session reused until it fails."""

    def __init__(
        self,
        node: str,
        address: str,
        port: int,
        username: str,
        password: str,
        cipher_suite: int | None = None,
    ) -> None:
        if cipher_suite is not None and cipher_suite not in SUPPORTED_SUITES:
            raise BMCCommandError(
                node,
                f"ipmi://{address}:{port}",
                "connect",
                f"cipher suite {cipher_suite} is not supported (use 3 or 17)",
                transient=False,
            )
        self.node = node
        self.address, self.port = address, port
        self.endpoint = f"ipmi://{address}:{port}"
        self._username = username
        self._password = password
        self.cipher_suite = cipher_suite
        self._session: _SuiteSession | None = None
        self._downgrade_logged = False

    # -- session ------------------------------------------------------------------
    def _error(self, action: str, reason: str) -> BMCError:
        reason = scrub(reason, self._password)
        low = reason.lower()
        if (
            "password" in low
            or "unauthorized" in low
            or "privilege" in low
            or ("name" in low and "user" in low)
        ):
            return BMCAuthError(
                self.node, self.endpoint, action, "authentication failed (user or password wrong)"
            )
        if "timeout" in low or "no longer connected" in low:
            return BMCTimeout(self.node, self.endpoint, action, reason)
        if "cipher suite" in low or "rakp2" in low:
            return BMCCommandError(self.node, self.endpoint, action, reason, transient=False)
        return BMCUnavailable(self.node, self.endpoint, action, reason)

    def _login(self, action: str) -> _SuiteSession:
        if self._session is not None and not self._session.broken:
            return self._session
        cls = _session_class(self.cipher_suite)
        try:
            self._session = cls(
                bmc=self.address, userid=self._username, password=self._password, port=self.port
            )
        except pyghmi_exc.IpmiException as exc:
            self._session = None
            # pyghmi raises IpmiException(None) when the BMC never answered the session set-up.
            why = str(exc) if exc.args and exc.args[0] not in (None, "None") else "no answer (timeout)"
            raise self._error(action, f"session set-up: {why}") from None
        except OSError as exc:
            self._session = None
            raise BMCUnavailable(
                self.node, self.endpoint, action, f"cannot reach the BMC: {exc.strerror}"
            ) from None
        chosen = self._session.downgraded_from_17
        if chosen is not None and not self._downgrade_logged:
            self._downgrade_logged = True
            log.warning(
                "node %s: BMC %s refused cipher suite 17 (it chose authentication algorithm %d): "
                "fell back to suite 3 (HMAC-SHA1); set bmc.cipher_suite: 3 to make this explicit",
                self.node,
                self.endpoint,
                chosen,
            )
        return self._session

    def _raw(self, action: str, netfn: int, command: int, data: tuple[int, ...] = ()) -> bytes:
        sess = self._login(action)
        try:
            rsp = sess.raw_command(netfn=netfn, command=command, data=data)
        except pyghmi_exc.IpmiException as exc:
            self.reset_session()
            raise self._error(action, str(exc)) from None
        if "error" in rsp:
            code = int(rsp.get("code") or 0xFFFF)
            if code == 0xFFFF or rsp["error"] == "timeout":
                self.reset_session()
                raise BMCTimeout(self.node, self.endpoint, action, "no answer from the BMC")
            text = _CODE_TEXT.get(code, scrub(str(rsp["error"]), self._password))
            raise _CompletionCodeError(
                self.node,
                self.endpoint,
                action,
                f"completion code {code:#04x} ({text})",
                transient=code in _TRANSIENT_CODES,
                code=code,
            )
        return bytes(rsp["data"])

    def reset_session(self) -> None:
        sess, self._session = self._session, None
        if sess is not None and not sess.broken:
            try:
                sess.logout()
            except Exception:  # the session is being dropped because it misbehaved
                log.debug("IPMI logout from %s failed", self.endpoint, exc_info=True)

    def close(self) -> None:
        self.reset_session()

    # -- operations ------------------------------------------------------------------
    def power_state(self) -> PowerState:
        data = self._raw("power status", 0x00, 0x01)  # Get Chassis Status
        if not data:
            raise BMCCommandError(
                self.node, self.endpoint, "power status", "empty chassis status", transient=True
            )
        return PowerState.ON if data[0] & 0x01 else PowerState.OFF

    def power(self, action: PowerAction) -> None:
        self._raw(f"power {action.value}", 0x00, 0x02, (_CHASSIS_CONTROL[action],))  # Chassis Control

    def boot_override(self) -> BootOverride:
        data = self._raw("read boot device", 0x00, 0x09, (0x05, 0x00, 0x00))  # Get System Boot Options
        if len(data) < 4:
            raise BMCCommandError(
                self.node, self.endpoint, "read boot device", "short boot flags", transient=True
            )
        flags, selector = data[2], (data[3] >> 2) & 0x0F
        device = _DEVICES.get(selector) if flags & BOOT_FLAG_VALID else None
        return BootOverride(device, bool(flags & BOOT_FLAG_PERSISTENT), bool(flags & BOOT_FLAG_EFI))

    def set_boot_override(self, device: BootDevice, persistent: bool, uefi: bool) -> None:
        action = f"set boot device {device.value}"
        # Boot info acknowledge first (as pyghmi and ipmitool do): some BMCs otherwise
        # let the firmware clear the flags before the next boot.
        self._raw(action, 0x00, 0x08, (0x03, 0x08))
        flags = BOOT_FLAG_VALID | (BOOT_FLAG_PERSISTENT if persistent else 0) | (BOOT_FLAG_EFI if uefi else 0)
        self._raw(action, 0x00, 0x08, (0x05, flags, _DEVICE_CODES[device] << 2, 0x00, 0x00, 0x00))

    def identity(self) -> Identity:
        action = "read identity"
        data = self._raw(action, 0x06, 0x37)  # Get System GUID
        guid = str(uuidlib.UUID(bytes_le=data[:16])) if len(data) >= 16 else None
        info = self._fru_info(action)

        def text(*keys: str) -> str | None:
            for key in keys:
                value = info.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
            return None

        return Identity(
            uuid=guid,
            serial=text("Serial Number", "Board serial number", "Chassis serial number"),
            vendor=text("Manufacturer", "Board manufacturer"),
            model=text("Product name", "Board product name"),
        )

    def _fru_info(self, action: str) -> dict[str, Any]:
        """The fields of FRU device 0 (the system's inventory), parsed by pyghmi.

        Empty when the BMC has no such FRU device or its data cannot be parsed: the
        identity then has the UUID only, as before. Transient failures are raised.
        """
        try:
            area = self._raw(action, 0x0A, 0x10, (0,))  # Get FRU Inventory Area Info
        except BMCCommandError as exc:
            if exc.transient:
                raise
            log.debug("node %s: BMC %s has no FRU device 0: %s", self.node, self.endpoint, exc.reason)
            return {}
        if len(area) < 3:
            return {}
        # Size in bytes. Word-addressed devices (bit 0 of byte 3) are read like byte ones,
        # as pyghmi and ipmitool do: what comes back is what the data is.
        size = area[0] | area[1] << 8
        image = bytearray()
        chunk = _FRU_CHUNK
        offset = 0
        while offset < size:
            count = min(chunk, size - offset)
            try:  # Read FRU Data: device, offset (LS first), count
                data = self._raw(action, 0x0A, 0x11, (0, offset & 0xFF, offset >> 8, count))
            except _CompletionCodeError as exc:
                if exc.code in (0xC9, 0xCA) and chunk > 8:  # more than the BMC can return at once
                    chunk //= 2
                    continue
                raise
            if not data or data[0] == 0:
                break
            image += data[1 : 1 + data[0]]
            offset += data[0]
        try:
            return dict(pyghmi_fru.FRU(rawdata=bytes(image)).info or {})
        except Exception as exc:  # a BMC's malformed FRU data: no serial, not a failure
            log.debug("node %s: BMC %s: unreadable FRU data: %s", self.node, self.endpoint, exc)
            return {}
