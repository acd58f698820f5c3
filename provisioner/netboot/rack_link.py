"""A rack's boot server inside `up`: push once, then one SSH session kept open for the run.

``RackLink`` pushes the rack's bundle (``remote.push``: host key checked as by ``netboot
push``), then runs the agent's ``follow`` (``remote_follow``) over one SSH channel:

- the agent's events (DHCP leases, iPXE scripts, config fetches) arrive as they are written
  and go straight into the local event log, so `up`'s node flow sees a rack-2 config fetch
  as soon as a local one;
- node-state changes (a node installed, or reset) go the other way at once, so the boot
  server answers an installed node "boot from disk" without a re-push.

The cursor is the one ``netboot remote-status`` uses (byte offset and last remote id, under
its lock), so a dropped session is resumed from the last event merged: reconnects back off
(0.5 s doubling to 8 s), and no event is merged twice or skipped. ``close`` stops the remote
service unless the rack is to be kept serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import paramiko

from ..events import EventLog
from ..fsutil import atomic_write, locked
from ..inventory.model import Node, Site
from ..state import StateStore
from . import remote
from .remote_payload import LAUNCHER
from .remote_ssh import boot_target, remote_dir_for, session

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0
LINK_EVENT = "netboot.remote"  # link state changes, in the local event log


def _cursor(path: Path, where: str) -> dict[str, Any]:
    try:
        cursor = json.loads(path.read_text())
    except (OSError, ValueError):
        cursor = {}
    if not isinstance(cursor, dict) or cursor.get("where") != where:
        cursor = {"where": where, "offset": 0, "last_id": 0}
    return cursor


class RackLink:
    """One rack's boot server for the length of a run (a context manager)."""

    def __init__(
        self,
        site: Site,
        rack: str,
        nodes: list[Node],
        store: StateStore,
        events: EventLog,
        *,
        keep: bool = False,
        accept_new: bool = False,
        timeout: float = 15.0,
        **push_options: Any,
    ) -> None:
        """``push_options``: what ``netboot push`` takes besides (``remote_dir``, ``dhcp``,
        ``http_port``, ``assets_root``, ...)."""
        self.push_options = push_options
        self.site, self.rack, self.nodes, self.store, self.events = site, rack, nodes, store, events
        self.keep, self.accept_new, self.timeout = keep, accept_new, timeout
        self.target = boot_target(site, rack)
        self.root = ""
        self.where = ""
        self.reconnects = 0
        self.merged = 0
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: paramiko.Channel | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Push and start following; an unreachable boot server raises (``OperationError``)."""
        result = remote.push(
            self.site,
            self.rack,
            self.nodes,
            self.store,
            self.events,
            accept_new=self.accept_new,
            timeout=self.timeout,
            **self.push_options,
        )
        self.root = result["remote_dir"]
        t = self.target
        self.where = f"{t.user}@{t.host}:{t.port}:{self.root}"
        self._thread = threading.Thread(target=self._run, name=f"rack-link-{self.rack}", daemon=True)
        self._thread.start()
        return result

    def close(self) -> None:
        """End the link with a last handshake: the node states as they are now are sent, the
        follower is told the session ends (EOF) and its exit awaited, so the boot server has
        applied them before the run ends. A state written in the last second of a run (a node
        recorded installed just before ``up`` returned) was otherwise never sent, and a kept
        boot server reinstalled that node at its next network boot."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=3 * self.timeout)
            chan = self._channel
            if self._thread.is_alive() and chan is not None:  # a hung session: do not hold the run
                with contextlib.suppress(Exception):
                    chan.close()
                self._thread.join(timeout=5)
        if not self.keep and self.root:
            try:
                remote.remote_stop(self.site, self.rack, self.events, remote_dir=self.root)
            except Exception as exc:  # the run's result stands; say why the service may still run
                log.warning("rack %s: could not stop the boot server's service: %s", self.rack, exc)

    def __enter__(self) -> RackLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the link ----------------------------------------------------------------------------
    def _run(self) -> None:
        delay = BACKOFF_FIRST
        last_chance = False  # close() came while the link was down: one more session to hand over
        while True:
            try:
                self._follow_once()
                return  # only close()'s final handshake ends a session without an error
            except Exception as exc:  # SSH or network trouble: back off and resume from the cursor
                if self._closing.is_set():
                    if last_chance:
                        reason = str(exc)[:200]
                        self.events.append(LINK_EVENT, None, "unsynced", rack=self.rack, reason=reason)
                        log.warning(
                            "rack %s: the last node states may not have reached %s (%s); "
                            "`netboot push` sends them again",
                            self.rack,
                            self.target.label,
                            exc,
                        )
                        return
                    last_chance = True
                    continue
                self.events.append(LINK_EVENT, None, "dropped", rack=self.rack, reason=str(exc)[:200])
                log.info(
                    "rack %s: link to %s dropped (%s); retry in %.1fs",
                    self.rack,
                    self.target.label,
                    exc,
                    delay,
                )
            self._closing.wait(delay)  # close() cuts the back-off short: the handover is due now
            delay = min(delay * 2, BACKOFF_MAX)
            self.reconnects += 1

    def _follow_once(self) -> None:
        cursor_path = remote._cursor_path(self.site, self.rack)
        with locked(cursor_path.with_suffix(".lock")):
            cursor = _cursor(cursor_path, self.where)
        with session(self.target, self.accept_new, self.timeout) as bs:
            root = self.root or remote_dir_for(bs, None)
            transport = bs.client.get_transport()
            assert transport is not None
            transport.set_keepalive(5)
            chan = transport.open_session()
            self._channel = chan
            cmd = (
                f"sh {shlex.quote(root + '/' + LAUNCHER)} follow "
                f"--offset {int(cursor['offset'])} --after {int(cursor['last_id'])}"
            )
            chan.exec_command(cmd)
            chan.settimeout(1.0)
            self.events.append(LINK_EVENT, None, "connected", rack=self.rack, after=cursor["last_id"])
            sent: dict[str, bool] = {}
            buf = b""
            while True:
                closing = self._closing.is_set()  # read before the send: no change can slip past
                self._send_states(chan, sent)
                if closing:
                    chan.shutdown_write()  # EOF: the follower applies what it read, then exits
                    deadline = time.monotonic() + self.timeout
                    ended = False
                    while not ended:
                        if time.monotonic() > deadline:
                            raise ConnectionError("the follow session did not end after its input did")
                        buf, ended = self._receive(chan, buf, cursor_path)
                    status = chan.recv_exit_status()
                    if status != 0:
                        raise ConnectionError(f"the follow session ended with exit {status}")
                    return
                buf, ended = self._receive(chan, buf, cursor_path)
                if ended:
                    raise ConnectionError(f"the follow session ended (exit {chan.recv_exit_status()})")

    def _receive(self, chan: paramiko.Channel, buf: bytes, cursor_path: Path) -> tuple[bytes, bool]:
        """Merge the complete event lines that arrive within the channel's timeout. Returns the
        incomplete tail, to be continued, and whether the follower's output has ended."""
        try:
            data = chan.recv(65536)
        except TimeoutError:
            return buf, False
        if not data:
            return buf, True
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                self._merge(cursor_path, line)
        return buf, False

    def _send_states(self, chan: paramiko.Channel, sent: dict[str, bool]) -> None:
        """Every rack node's installed flag on connect, then each change as it happens."""
        for node in self.nodes:
            installed = self.store.is_installed(node.name)
            if sent.get(node.name) is not installed:
                chan.sendall((json.dumps({"node": node.name, "installed": installed}) + "\n").encode())
                sent[node.name] = installed

    def _merge(self, cursor_path: Path, line: bytes) -> None:
        try:
            item = json.loads(line)
            end, raw = int(item["end"]), item["event"]
            rid, kind = int(raw["id"]), str(raw["kind"])
        except (ValueError, KeyError, TypeError):
            return
        with locked(cursor_path.with_suffix(".lock")):
            cursor = _cursor(cursor_path, self.where)
            if rid <= cursor["last_id"]:
                return  # merged already (by remote-status, or before a reconnect)
            data = {k: v for k, v in (raw.get("data") or {}).items() if k not in ("kind", "node", "outcome")}
            data["remote"] = {"rack": self.rack, "host": self.target.host, "id": rid, "time": raw.get("time")}
            self.events.append(kind, raw.get("node"), raw.get("outcome", "ok"), **data)
            cursor.update(offset=end, last_id=rid)
            atomic_write(cursor_path, json.dumps(cursor) + "\n", mode=0o600)
            self.merged += 1
