"""Proxy-DHCP answers as events, read from dnsmasq's own log.

In proxy mode dnsmasq hands out no address, so it makes no lease and never runs the
``--dhcp-script``: without this, the event log would show nothing between a node's power-on
and its iPXE request, and an operator could not tell "the firmware never asked" from "the
proxy never answered". dnsmasq's ``log-dhcp`` lines carry each answer, keyed by the DHCP
transaction id::

    <time> dnsmasq-dhcp[<pid>]: <xid> vendor class: PXEClient:Arch:00007:UNDI:003010
    <time> dnsmasq-dhcp[<pid>]: <xid> user class: iPXE
    <time> dnsmasq-dhcp[<pid>]: <xid> PXE(eth0) 52:54:00:78:00:21 proxy
    <time> dnsmasq-dhcp[<pid>]: <xid> bootfile name: http://192.168.78.140:8080/boot.ipxe

A PXE firmware's DISCOVER is answered with a PXE menu (``pxe-service``; no file yet), and its
file comes from the boot-server reply on port 4011 (``PXE(eth0) <ip> <mac> snponly.efi``); an
iPXE DISCOVER gets ``bootfile name:`` at once. One ``dhcp.proxy`` event per answer
(transaction and file, or menu), naming the node by its MAC.
Stdlib only: it runs inside the boot server's agent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..events import DHCP_PROXY, EventLog

_LINE = re.compile(r"dnsmasq-dhcp\[\d+\]: (?P<xid>\d+) (?P<msg>.*)$")
_PROXY = re.compile(r"PXE\((?P<iface>[^)]+)\) (?P<mac>[0-9a-f:]{17}) proxy$", re.IGNORECASE)
_BOOT_SERVER = re.compile(
    r"PXE\((?P<iface>[^)]+)\) (?P<ip>[0-9.]+) (?P<mac>[0-9a-f:]{17}) (?P<file>\S+)$", re.IGNORECASE
)
_ARCH = re.compile(r"PXEClient:Arch:(?P<arch>\d{5})")
_ANSWER_END = ("next server: ", "broadcast response", "unicast response")
_PENDING_MAX = 256  # transactions remembered at once (a busy segment never grows this without bound)


@dataclass
class _Transaction:
    mac: str | None = None
    interface: str | None = None
    arch: int | None = None
    ipxe: bool = False
    bootfile: str | None = None
    sent: set[str] = field(default_factory=set)


class ProxyLogFollower:
    """Turns new lines of dnsmasq's log into ``dhcp.proxy`` events; ``poll`` reads what is new.

    Starts at the log's current end (what came before belongs to an earlier run), and starts
    over when the file shrinks (rotated or truncated)."""

    def __init__(self, path: Path, events: EventLog, node_for: Callable[[str], str | None]) -> None:
        self.path = path
        self.events = events
        self.node_for = node_for
        self.offset = path.stat().st_size if path.exists() else 0
        self._partial = b""
        self._pending: dict[str, _Transaction] = {}

    def poll(self) -> int:
        """Read the lines written since the last call; returns the number of events emitted."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(size - self.offset)
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        return sum(self._line(raw.decode("utf-8", "replace")) for raw in lines)

    def _line(self, line: str) -> int:
        m = _LINE.search(line)
        if m is None:
            return 0
        xid, msg = m["xid"], m["msg"]
        tx = self._pending.get(xid)
        if tx is None:
            if len(self._pending) >= _PENDING_MAX:
                self._pending.pop(next(iter(self._pending)))
            tx = self._pending[xid] = _Transaction()
        if msg.startswith("vendor class: "):
            arch = _ARCH.search(msg)
            tx.arch = int(arch["arch"]) if arch else tx.arch
        elif msg.startswith("user class: "):
            tx.ipxe = tx.ipxe or msg.removeprefix("user class: ").strip() == "iPXE"
        elif (proxy := _PROXY.search(msg)) is not None:
            tx.mac, tx.interface, tx.bootfile = proxy["mac"].lower(), proxy["iface"], None
        elif (server := _BOOT_SERVER.search(msg)) is not None:  # the port-4011 boot server reply
            tx.mac, tx.interface = server["mac"].lower(), server["iface"]
            return self._emit(xid, tx, server["file"], ip=server["ip"])
        elif msg.startswith("bootfile name: ") and tx.mac is not None:
            tx.bootfile = msg.removeprefix("bootfile name: ").strip()
        elif msg.startswith(_ANSWER_END) and tx.mac is not None:
            # A firmware's DISCOVER gets a PXE menu (its file comes from the boot server step);
            # iPXE's gets the boot file at once.
            return self._emit(xid, tx, tx.bootfile)
        return 0

    def _emit(self, xid: str, tx: _Transaction, bootfile: str | None, ip: str | None = None) -> int:
        mac, key = tx.mac, bootfile or "menu"
        tx.mac = None  # this answer is done; a repeat of the transaction starts again
        if mac is None or key in tx.sent:
            return 0  # the same answer repeated (a retransmitted DISCOVER, or the REQUEST)
        tx.sent.add(key)
        node = self.node_for(mac)
        data: dict[str, object] = {
            "mac": mac,
            "interface": tx.interface,
            "bootfile": bootfile,
            "menu": bootfile is None,
            "arch": tx.arch,
            "ipxe": tx.ipxe,
            "xid": int(xid),
        }
        if ip is not None:
            data["ip"] = ip
        self.events.append(DHCP_PROXY, node, "ok" if node else "unknown", **data)
        return 1
