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
        self._stop = threading.Event()
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
        self._stop.set()
        chan = self._channel
        if chan is not None:
            with contextlib.suppress(Exception):
                chan.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
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
        while not self._stop.is_set():
            try:
                self._follow_once()
                delay = BACKOFF_FIRST
            except Exception as exc:  # SSH or network trouble: back off and resume from the cursor
                if self._stop.is_set():
                    return
                self.events.append(LINK_EVENT, None, "dropped", rack=self.rack, reason=str(exc)[:200])
                log.info(
                    "rack %s: link to %s dropped (%s); retry in %.1fs",
                    self.rack,
                    self.target.label,
                    exc,
                    delay,
                )
            if self._stop.wait(delay):
                return
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
            while not self._stop.is_set():
                self._send_states(chan, sent)
                try:
                    data = chan.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    raise ConnectionError(f"the follow session ended (exit {chan.recv_exit_status()})")
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._merge(cursor_path, line)

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
