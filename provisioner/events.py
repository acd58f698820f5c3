"""The event log: what happened to which node, when, and how it ended.

Several processes write it (the netboot service, dnsmasq's lease script, ``up``) and
``up`` waits on it, so it is an append-only JSON-lines file whose appends are
serialised by an advisory lock; event ids are monotonic across all writers because the
writer reads the last id under the same lock. A torn last line (a crash mid-write) is
skipped by readers and never breaks the next append.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .fsutil import locked

# Event kinds other modules emit; keep them here so readers and writers agree.
DHCP_LEASE = "dhcp.lease"
IPXE_SCRIPT = "ipxe.script"
IPXE_UNKNOWN = "ipxe.unknown-machine"
ASSET_DOWNLOAD = "asset.download"
CONFIG_FETCH = "config.fetch"
CONFIG_DENIED = "config.denied"
NODE_STEP = "node.step"
CLUSTER_STEP = "cluster.step"


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    kind: str
    node: str | None = None
    outcome: str = "ok"  # ok | error | denied | unknown | ...
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = self.path.with_name(self.path.name + ".lock")
        self._cache_offset = 0
        self._last_id = 0

    def _scan_last_id(self) -> int:
        """The highest id on disk, reading only what was appended since the last scan."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._cache_offset)
                for line in fh:
                    if not line.endswith(b"\n"):
                        break
                    self._cache_offset += len(line)
                    try:
                        self._last_id = max(self._last_id, int(json.loads(line)["id"]))
                    except (ValueError, KeyError, TypeError):
                        continue
        except FileNotFoundError:
            pass
        return self._last_id

    def append(self, kind: str, node: str | None = None, outcome: str = "ok", **data: Any) -> Event:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self._lock):
            size = self.path.stat().st_size if self.path.exists() else 0
            if size < self._cache_offset:  # the log was replaced: rescan
                self._cache_offset, self._last_id = 0, 0
            event = Event(self._scan_last_id() + 1, time.time(), kind, node, outcome, data)
            line = event.to_json().encode() + b"\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                # A torn line from a crashed writer: start ours on a fresh line.
                if size and _last_byte(self.path) != b"\n":
                    line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._last_id = event.id
            self._cache_offset = self.path.stat().st_size
        return event

    def read(self, since: int = 0) -> list[Event]:
        return list(self.iter(since))

    def iter(self, since: int = 0) -> Iterator[Event]:
        try:
            with open(self.path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        return
                    try:
                        raw = json.loads(line)
                        ev = Event(
                            int(raw["id"]), float(raw["time"]), str(raw["kind"]), raw.get("node"),
                            raw.get("outcome", "ok"), raw.get("data") or {},
                        )
                    except (ValueError, KeyError, TypeError):
                        continue
                    if ev.id > since:
                        yield ev
        except FileNotFoundError:
            return

    def last_id(self) -> int:
        return self._scan_last_id()

    def wait_for(
        self,
        match: Callable[[Event], bool],
        timeout: float,
        since: int = 0,
        poll: float = 0.2,
        stop: Callable[[], bool] | None = None,
    ) -> Event | None:
        """Block until an event after ``since`` matches, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        cursor = since
        while True:
            for ev in self.iter(cursor):
                cursor = ev.id
                if match(ev):
                    return ev
            if time.monotonic() >= deadline or (stop is not None and stop()):
                return None
            time.sleep(poll)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)
