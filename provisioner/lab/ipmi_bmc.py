"""An IPMI 2.0 (RMCP+/lanplus) BMC emulator driving a ``Machine``: a stand-in for a hardware BMC.

Built on pyghmi's server class. It implements what the provisioner needs from a real
BMC, with the wire encodings of the IPMI 2.0 specification (so ``ipmitool`` can check
it independently): chassis status and control (section 28.2/28.3), system boot options
parameter 5 "boot flags" with the valid/persistent/EFI bits (table 28-14) and the boot
device selector, Get Device ID and Get System GUID (the SMBIOS UUID).

Faults are injected per command. Latency is injected per datagram the BMC sends, so
session establishment (Get Channel Authentication Capabilities, Open Session, RAKP
1-4, Set Session Privilege, Close Session) costs a client the same round-trip time as a
command, as on a real network; every sent datagram is counted (``replies``). Delayed
datagrams are queued and sent from the serving loop, never by sleeping, because every
pyghmi server in a process shares one event loop.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.serversession as pyghmi_serversession
import pyghmi.ipmi.private.session as pyghmi_session

from .faults import Fault, FaultInjector
from .machine import BootTarget, Machine, MachineIdentity

log = logging.getLogger("provisioner.lab.ipmi-bmc-emulator")

# Completion codes (IPMI 2.0 table 5-2).
CC_OK = 0x00
CC_NODE_BUSY = 0xC0
CC_INVALID_COMMAND = 0xC1
CC_PARAM_NOT_SUPPORTED = 0x80
CC_INVALID_DATA = 0xCC
CC_PARAM_OUT_OF_RANGE = 0xC9
CC_NOT_IN_PRESENT_STATE = 0xD5
CC_NOT_PRESENT = 0xCB  # requested sensor, data or record not present

NETFN_STORAGE = 0x0A
_FRU_READ_MAX = 64  # bytes one Read FRU Data answer carries at most (BMCs limit it too)
CMD_GET_FRU_INVENTORY_AREA_INFO = 0x10
CMD_READ_FRU_DATA = 0x11

# Boot flags (parameter 5), data byte 1 and the device selector in data byte 2 bits 5:2.
BOOT_FLAG_VALID = 0x80
BOOT_FLAG_PERSISTENT = 0x40
BOOT_FLAG_EFI = 0x20
DEVICE_PXE = 0x1
DEVICE_DISK = 0x2
_DEVICES: dict[int, BootTarget] = {DEVICE_PXE: "pxe", DEVICE_DISK: "disk"}
_DEVICE_CODES = {v: k for k, v in _DEVICES.items()}

# (netfn, command) pairs that change the machine: these may be silently dropped (no-op fault).
_MUTATING = {(0x00, 0x02), (0x00, 0x08)}


def _fru_checksum(data: bytes | bytearray) -> int:
    return -sum(data) & 0xFF


def fru_image(identity: MachineIdentity) -> bytes:
    """FRU device 0 as a BMC stores it: common header, then a Product Info Area.

    Fields are 8-bit ASCII/Latin-1 type/length encoded (type 11b), in the order the FRU
    specification gives: manufacturer, product name, part/model number, version,
    serial number, asset tag, FRU file id; then the end marker, padding and checksum.
    """

    def field(text: str) -> bytes:
        data = text.encode("latin-1", "replace")[:63]
        return bytes([0xC0 | len(data)]) + data

    body = bytearray([0x01, 0x00, 0x00])  # format version, length (set below), language: English
    for text in (identity.vendor, identity.model, "", "", identity.serial, "", ""):
        body += field(text)
    body.append(0xC1)  # no more fields
    body += bytes(-(len(body) + 1) % 8)
    body[1] = (len(body) + 1) // 8
    body.append(_fru_checksum(body))
    header = bytearray([0x01, 0, 0, 0, 1, 0, 0])  # version; only a product area, at 8 bytes
    header.append(_fru_checksum(header))
    return bytes(header + body)


class _ServerSession(pyghmi_serversession.ServerSession):
    """pyghmi's server-side session, forgetting itself without taking its neighbours along.

    pyghmi files server sessions by client address (IP and UDP port) and BMC port, and
    a client multiplexes many BMC sessions over one UDP port. Two pyghmi defects made
    one client's log-in break the other sessions of that client port on every BMC of
    the process: a closed session stays registered, and when a new log-in comes from
    the port of a registered session to the same BMC (a reconnect, or a client's
    retried log-in), pyghmi drops the registrations of *all* BMCs for that client
    port. The sessions cut off that way never got another answer (100 nodes: a
    quarter of them failed after 4 x 10 s of log-in retries). Here a session only
    ever removes its own registration: at Close Session, or when its client port
    starts a new log-in to this BMC.
    """

    def close_server_session(self) -> None:
        self._forget()

    def sessionless_data(self, data: Any, sockaddr: Any) -> Any:
        # pyghmi routes a datagram to this session when it arrives, but processes it later;
        # if the client's registrations were forgotten in between (a Close Session or a new
        # log-in from the same client port, handled first in the same batch), pyghmi calls
        # this BMC-side method on the session. Hand the datagram to the BMC, as routing at
        # processing time would have; without this it was dropped and the client's log-in
        # failed after its retries (seen with 100 BMCs in one process). ``serve`` now routes and
        # handles each datagram in one step, so this is a safety net for pyghmi's own loop.
        return self.bmc.sessionless_data(data, sockaddr)

    def _forget(self) -> None:
        handlers = pyghmi_session.Session.bmc_handlers.get(self.sockaddr)
        if handlers is not None and handlers.get(self.bmc.port) is self:
            del handlers[self.bmc.port]
            if not handlers:
                del pyghmi_session.Session.bmc_handlers[self.sockaddr]

    def _handle_ipmi_packet(self, data: Any, sockaddr: Any = None, qent: Any = None) -> Any:
        # An IPMI 1.5 packet outside any session (sequence number and session id 0)
        # is the start of a new log-in: hand it to the BMC, as pyghmi does, but
        # forget only this session.
        if qent is not None and len(data) >= 13 and data[4] in (0, 2) and not any(data[5:13]):
            server = pyghmi_session.Session.bmc_handlers.get(qent[2], {}).get(0)
            if server is not None:
                self._forget()
                server.pktqueue.append(qent)
                server.process_pktqueue()
                return None
        return super()._handle_ipmi_packet(data, sockaddr, qent)


# IpmiServer creates its sessions by this module-level name.
pyghmi_serversession.ServerSession = _ServerSession  # type: ignore[misc]

# Every datagram a BMC of this process sends goes through pyghmi's module-level
# ``_io_sendto`` (sessionless answers and session payloads alike): the one place where
# the per-datagram latency and the reply count apply. Only emulator processes import
# this module, never a process running pyghmi as a client.
_SERVER_SOCKETS: dict[Any, EmulatedIpmiBmc] = {}
_real_io_sendto = pyghmi_session._io_sendto


def _delayed_io_sendto(sock: Any, packet: Any, sockaddr: Any) -> None:
    bmc = _SERVER_SOCKETS.get(sock)
    if bmc is None:
        _real_io_sendto(sock, packet, sockaddr)
        return
    bmc.faults.count_reply()
    latency = bmc.faults.spec.latency
    if latency > 0:
        data = bytes(packet)  # pyghmi reuses its packet buffers
        bmc.delays.push(latency, lambda: _real_io_sendto(sock, data, sockaddr))
    else:
        _real_io_sendto(sock, packet, sockaddr)


pyghmi_session._io_sendto = _delayed_io_sendto


class DelayQueue:
    """Work to run at a later time from the serving loop (the injected latency)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def push(self, delay: float, fn: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn))

    def next_delay(self, ceiling: float) -> float:
        with self._lock:
            if not self._heap:
                return ceiling
            return max(0.0, min(ceiling, self._heap[0][0] - time.monotonic()))

    def run_due(self) -> None:
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > time.monotonic():
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # one broken answer must not stop the other BMCs
                log.exception("IPMI BMC emulator: deferred answer failed")


class EmulatedIpmiBmc(pyghmi_bmc.Bmc):
    """One emulated BMC (stand-in for hardware) on one UDP port, managing one machine."""

    def __init__(
        self,
        machine: Machine,
        username: str,
        password: str,
        port: int,
        address: str = "127.0.0.1",
        faults: FaultInjector | None = None,
        delays: DelayQueue | None = None,
    ) -> None:
        super().__init__(
            {username: password}, port=port, address=address, bmcuuid=uuidlib.UUID(machine.identity.uuid)
        )
        # pyghmi routes session packets by the socket's real port; with port 0 (any free
        # port) the requested number would never match.
        self.port = self.serversocket.getsockname()[1]
        _detach_from_pyghmi_io(self.serversocket)
        self.machine = machine
        self.faults = faults or FaultInjector()
        self.delays = delays or DelayQueue()
        self.name = machine.name
        _SERVER_SOCKETS[self.serversocket] = self
        log.info(
            "IPMI BMC emulator (stand-in for a hardware BMC) for %s on %s:%d",
            machine.name,
            address,
            self.port,
        )

    # -- request dispatch with latency and faults ------------------------------------
    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        netfn, command = request["netfn"], request["command"]
        fault = self.faults.decide(mutating=(netfn, command) in _MUTATING)
        if fault is Fault.TIMEOUT:
            log.info(
                "IPMI BMC emulator %s: injected timeout (no answer) for %#x/%#x", self.name, netfn, command
            )
            return
        # The session answers using the fields of the request it parsed last; keep them
        # so a deferred answer still matches its request.
        saved = {
            k: getattr(session, k, None)
            for k in ("seqlun", "clientaddr", "clientnetfn", "rqlun", "clientcommand")
        }

        def answer() -> None:
            for k, v in saved.items():
                setattr(session, k, v)
            if fault is Fault.ERROR:
                log.info("IPMI BMC emulator %s: injected error for %#x/%#x", self.name, netfn, command)
                session.send_ipmi_response(code=CC_NODE_BUSY)
            elif fault is Fault.NOOP:
                log.info("IPMI BMC emulator %s: injected silent no-op for %#x/%#x", self.name, netfn, command)
                session.send_ipmi_response()
            elif netfn == NETFN_STORAGE:
                self.handle_storage_request(request, session)
            else:
                super(EmulatedIpmiBmc, self).handle_raw_request(request, session)

        answer()  # its datagram is delayed on the way out (_delayed_io_sendto)

    # -- chassis ---------------------------------------------------------------------
    def get_power_state(self) -> str:
        return "on" if self.machine.power_state() else "off"

    def power_on(self) -> int:
        self.machine.power_on()
        return CC_OK

    def power_off(self) -> int:
        self.machine.power_off(hard=True)
        return CC_OK

    def power_shutdown(self) -> int:
        self.machine.power_off(hard=False)
        return CC_OK

    def power_cycle(self) -> int:
        # Spec: power cycle of a powered-off system has no effect; real BMCs refuse it.
        if not self.machine.power_state():
            return CC_NOT_IN_PRESENT_STATE
        self.machine.power_off(hard=True)
        self.machine.power_on()
        return CC_OK

    def power_reset(self) -> int:
        if not self.machine.power_state():
            return CC_NOT_IN_PRESENT_STATE
        self.machine.reset()
        return CC_OK

    def pulse_diag(self) -> int:
        return CC_INVALID_COMMAND

    def cold_reset(self) -> int:
        return CC_OK

    def get_system_guid(self) -> uuidlib.UUID:
        return uuidlib.UUID(self.machine.identity.uuid)

    # -- FRU inventory (storage netfn) --------------------------------------------------
    def handle_storage_request(self, request: dict[str, Any], session: Any) -> None:
        command, data = request["command"], request["data"]
        if command not in (CMD_GET_FRU_INVENTORY_AREA_INFO, CMD_READ_FRU_DATA):
            session.send_ipmi_response(code=CC_INVALID_COMMAND)
            return
        if not data or data[0] != 0:  # only FRU device 0, the system's
            session.send_ipmi_response(code=CC_NOT_PRESENT)
            return
        image = fru_image(self.machine.identity)
        if command == CMD_GET_FRU_INVENTORY_AREA_INFO:
            # size in bytes (LS first), accessed by bytes
            session.send_ipmi_response(data=[len(image) & 0xFF, len(image) >> 8, 0x00])
            return
        if len(data) < 4:
            session.send_ipmi_response(code=CC_INVALID_DATA)
            return
        offset, count = data[1] | data[2] << 8, data[3]
        if offset > len(image):
            session.send_ipmi_response(code=CC_PARAM_OUT_OF_RANGE)
            return
        chunk = image[offset : offset + min(count, _FRU_READ_MAX)]
        session.send_ipmi_response(data=[len(chunk), *chunk])

    # -- boot options ------------------------------------------------------------------
    def get_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        param = request["data"][0] & 0x7F
        if param != 5:
            session.send_ipmi_response(code=CC_PARAM_NOT_SUPPORTED)
            return
        boot = self.machine.boot_device()
        flags = BOOT_FLAG_VALID
        if boot.persistent:
            flags |= BOOT_FLAG_PERSISTENT
        if boot.uefi:
            flags |= BOOT_FLAG_EFI
        device = _DEVICE_CODES[boot.device] << 2
        # parameter version 1, parameter 5 (valid), five bytes of boot flags
        session.send_ipmi_response(data=[0x01, 0x05, flags, device, 0x00, 0x00, 0x00])

    def set_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        data = request["data"]
        param = data[0] & 0x7F
        if param in (0, 3, 4):  # set-in-progress, boot info acknowledge, boot initiator info
            session.send_ipmi_response()
            return
        if param != 5:
            session.send_ipmi_response(code=CC_PARAM_NOT_SUPPORTED)
            return
        if len(data) < 3:
            session.send_ipmi_response(code=CC_INVALID_DATA)
            return
        flags, selector = data[1], (data[2] >> 2) & 0x0F
        current = self.machine.boot_device()
        if not flags & BOOT_FLAG_VALID or selector == 0:
            # "no override": the machine boots its persistent default again
            self.machine.set_boot_device(current.device if current.persistent else "disk", True, current.uefi)
            session.send_ipmi_response()
            return
        device = _DEVICES.get(selector)
        if device is None:
            session.send_ipmi_response(code=CC_INVALID_DATA)
            return
        self.machine.set_boot_device(
            device,
            bool(flags & BOOT_FLAG_PERSISTENT),
            bool(flags & BOOT_FLAG_EFI),
        )
        session.send_ipmi_response()


def _detach_from_pyghmi_io(sock: socket.socket) -> None:
    """Take a BMC's socket away from pyghmi's I/O thread: ``serve`` reads it itself.

    pyghmi's I/O thread selects on its socket list as it was when its ``select`` began (300 s
    when idle), and is woken for a new socket or a shorter deadline by a datagram that the
    waiting thread sends to ``iosockets[0]`` at pyghmi's ``myself`` address (127.0.0.1 or
    ::ffff:127.0.0.1). In an emulator process ``iosockets[0]`` is the first BMC's socket, so
    when BMCs listen on addresses of their own (the fleet's 127.2.x.y, the lab's namespace
    addresses) every wake-up went to a port nobody listened on: the BMCs created after the
    first were not watched until the first BMC received a datagram ("the emulators answer no
    session until the first BMC of the fleet has served one"), and a latency-delayed answer
    left only when the next datagram came in, i.e. after the client's retransmission (0.5-2 s
    each; 20 BMCs, 20 ms latency: median node visit 7.5 s instead of 0.26 s, and log-ins
    timed out). Also, a datagram routed by the I/O thread just after the serving thread
    checked its queue waited for the next datagram. Once detached, a BMC's datagrams are read,
    routed and handled by ``serve`` alone, in one thread, with no wake-ups.
    """
    with contextlib.suppress(ValueError):
        pyghmi_session.iosockets.remove(sock)


def _drain(bmc: EmulatedIpmiBmc) -> None:
    """Handle every datagram waiting on ``bmc``'s socket, routed as pyghmi's ``_io_graball`` does:
    to the client's session on this BMC (by client address and BMC port), else to the BMC."""
    sock = bmc.serversocket
    handlers = pyghmi_session.Session.bmc_handlers
    while True:
        try:  # pyghmi makes the socket blocking for each send: ask for this read not to block
            data, client = sock.recvfrom(3000, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # e.g. an ICMP error for an earlier answer: nothing to read
            return
        if len(data) < 4:
            continue
        session = handlers.get(client, {}).get(bmc.port)
        try:
            if session is not None:
                session.pktqueue.append((data, client, sock, True))
                session.process_pktqueue()
            else:
                bmc.sessionless_data(data, client)
        except Exception:
            # pyghmi's server occasionally cannot handle a packet (e.g. a malformed or
            # out-of-order one); drop that packet, keep serving.
            log.warning(
                "IPMI BMC emulator %s: dropped a packet pyghmi could not handle", bmc.name, exc_info=True
            )


def serve(bmcs: list[EmulatedIpmiBmc], delays: DelayQueue, stop: threading.Event) -> None:
    """Serve ``bmcs`` until ``stop`` is set: one loop reads every BMC's socket and handles its
    datagrams at once (see ``_detach_from_pyghmi_io``), and sends the deferred answers when due.

    The wait is bounded by the next deferred answer, and by 0.2 s so ``stop`` is seen.
    """
    log.info("IPMI BMC emulator loop serving %d stand-in BMCs", len(bmcs))
    with selectors.DefaultSelector() as selector:
        for bmc in bmcs:
            selector.register(bmc.serversocket, selectors.EVENT_READ, bmc)
        while not stop.is_set():
            for key, _events in selector.select(delays.next_delay(0.2)):
                _drain(key.data)
            delays.run_due()
