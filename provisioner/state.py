"""Where each node stands, persisted so a crash or Ctrl-C never loses progress.

One small JSON file per node under ``<state dir>/nodes/``, replaced atomically on every
change. The netboot service reads ``installed`` to decide between installing a node and
booting it from its disk, so that a BMC that keeps PXE first never causes a reinstall;
``up`` reads ``phase`` to resume from the last completed step.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .fsutil import atomic_write, fsync_dir, private_dir
from .layout import StateLayout
from .records import NODE_RECORD_SHAPE, MalformedState, node_recovery, read_cluster_record, read_record


class Phase(StrEnum):
    """Node steps in order. A node only moves forward, except by reset; a failure keeps
    the last completed phase and sets ``error``, so a rerun retries from there."""

    BLANK = "blank"
    POWERED_OFF = "powered-off"
    PXE_SET = "pxe-set"
    POWERED_ON = "powered-on"
    CONFIG_DELIVERED = "config-delivered"  # fetched over talos.config= or applied over the API
    INSTALLED = "installed"  # the installed OS answers over mutual TLS
    READY = "ready"  # boot device set to disk, persistent

    @property
    def order(self) -> int:
        return _ORDER[self]


_ORDER = {p: i for i, p in enumerate(Phase)}


@dataclass(frozen=True)
class NodeRecord:
    name: str
    phase: Phase = Phase.BLANK
    installed: bool = False
    attempts: int = 0  # power cycles spent waiting for a boot
    error: str | None = None
    last_event: int = 0  # id of the last event in events.jsonl about this node
    updated: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        raw = asdict(self)
        raw["phase"] = self.phase.value
        return json.dumps(raw, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> NodeRecord:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object")
        raw["phase"] = Phase(raw.get("phase", "blank"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


class _DirSync:
    """One directory's fsync, shared by the renames into it that meet (group commit): a rename is
    durable once an fsync of its directory that *started after it* has finished, so a thread that
    finds one running waits for it to end and then starts the next, covering every rename made
    meanwhile. 1,000 nodes' records each paid a directory fsync of their own."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._requested = 0  # renames that asked for a sync, numbered
        self._done = 0  # every rename up to this number is durable
        self._running = False

    def sync(self, directory: Path) -> None:
        with self._cv:
            self._requested += 1
            ticket = self._requested
            while self._running and self._done < ticket:
                self._cv.wait()
            if self._done >= ticket:
                return
            self._running = True
            covers = self._requested  # renamed before this fsync starts: all covered by it
        ok = False
        try:
            fsync_dir(directory)
            ok = True
        finally:
            with self._cv:
                self._running = False
                if ok:
                    self._done = max(self._done, covers)
                self._cv.notify_all()


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    """What tells one version of a record file from another: every write is a new inode."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class StateStore:
    """The per-cluster state directory: node records, events, locks, secrets, configs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.layout = StateLayout(self.root)  # the only place that knows the file names
        self._dirs_ready = False  # root and nodes/ made private (and durable) by this store
        self._nodes_sync = _DirSync()
        # Each node's record as this store last wrote or read it, with the file's identity then
        # (``_identity``): ``update`` re-reads a record only when the file changed since. A busy
        # `up` otherwise read every record back before each of its ~6 writes per node.
        self._known: dict[str, tuple[tuple[int, int, int], NodeRecord]] = {}

    @property
    def nodes_dir(self) -> Path:
        return self.layout.nodes_dir

    @property
    def events_path(self) -> Path:
        return self.layout.events

    @property
    def locks_dir(self) -> Path:
        return self.layout.locks_dir

    def _path(self, name: str) -> Path:
        return self.layout.node_record(name)

    def node(self, name: str) -> NodeRecord:
        """The node's record; a blank one when there is none. A record that exists but cannot
        be read raises ``MalformedState`` (exit 2, naming the file and the way out): read as
        blank it would get an installed node reinstalled."""
        path = self._path(name)
        try:
            seen = _identity(os.stat(path))
        except FileNotFoundError:
            seen = None
        known = self._known.get(name)
        if seen is not None and known is not None and known[0] == seen:
            return known[1]  # the file is still what this store last wrote or read
        recovery = node_recovery(path, name)
        raw = read_record(path, NODE_RECORD_SHAPE, recovery, required=("phase",))
        if raw is None:
            return NodeRecord(name)
        if raw["phase"] not in _ORDER:
            phases = ", ".join(p.value for p in Phase)
            raise MalformedState(path, f"field 'phase' is {raw['phase']!r}, not one of {phases}", recovery)
        record = NodeRecord.from_json(json.dumps(raw))
        if seen is not None:  # taken before the read: a file replaced meanwhile is read again next time
            self._known[name] = (seen, record)
        return record

    def save(self, record: NodeRecord) -> NodeRecord:
        if not self._dirs_ready or not self.nodes_dir.is_dir():  # once, not per record
            private_dir(self.root)
            private_dir(self.nodes_dir)
            self._dirs_ready = True
        record = replace(record, updated=time.time())
        text = record.to_json() + "\n"
        written = atomic_write(self._path(record.name), text, sync_dir=self._nodes_sync.sync)
        self._known[record.name] = (_identity(written), record)
        return record

    def update(self, name: str, **changes: Any) -> NodeRecord:
        return self.save(replace(self.node(name), **changes))

    def is_installed(self, name: str) -> bool:
        return self.node(name).installed

    def check(self, names: Iterable[str]) -> None:
        """Read every record a run relies on (these nodes' and ``cluster.json``) before it
        starts: a malformed one stops it with exit 2 (``MalformedState``: file, problem,
        recovery) before any machine is touched, instead of half-way through."""
        for name in names:
            self.node(name)
        read_cluster_record(self.layout.cluster_record)

    def all(self) -> list[NodeRecord]:
        if not self.nodes_dir.exists():
            return []
        return [self.node(p.stem) for p in sorted(self.nodes_dir.glob("*.json"))]
