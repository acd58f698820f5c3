"""The event log: what happened to which node, when, and how it ended.

Several processes write it (the netboot service, dnsmasq's lease script, ``up``) and
``up`` waits on it, so it is an append-only JSON-lines file whose appends are
serialised by an advisory lock; event ids are monotonic across all writers because the
writer reads the last id under the same lock. A torn last line (a crash mid-write) is
skipped by readers and never breaks the next append.

Reading is incremental. Each ``EventLog`` keeps an in-memory index fed by a tail reader
that remembers its byte offset and reads only bytes appended since the last look (a
partial last line waits for its newline), with the events of each node in id order. So
``up``, polling every node several times a second, pays for new lines only: a poll for a
node's new events is a dictionary lookup and a bisect, whatever the size of the log
(re-reading the whole file cost 248 ms per poll at 20,000 lines).

The log is rotated by size: an append that would take ``events.jsonl`` past
``max_bytes`` first renames it to ``events.jsonl.1`` (older ones shift to ``.2`` ...,
``keep`` of them are kept). Ids stay monotonic across rotation (the writer takes the last
id from the rotated file when the new one is still empty), and readers follow it: a tail
reader finds the file it was reading under its rotated name by inode, finishes it, then
starts on the new one. The in-memory index holds the current file and the one before it;
older history is streamed from the rotated files when ``iter`` asks for it.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .fsutil import fsync_dir, locked

log = logging.getLogger(__name__)

# Event kinds other modules emit; keep them here so readers and writers agree.
DHCP_LEASE = "dhcp.lease"
DHCP_PROXY = "dhcp.proxy"  # a proxy-DHCP answer (boot options only): netboot/proxylog.py
IPXE_SCRIPT = "ipxe.script"
IPXE_UNKNOWN = "ipxe.unknown-machine"
ASSET_DOWNLOAD = "asset.download"
CONFIG_FETCH = "config.fetch"
CONFIG_DENIED = "config.denied"
NODE_STEP = "node.step"
CLUSTER_STEP = "cluster.step"

# A busy 1,000-node run writes a few hundred thousand short lines (~200 bytes each); 64 MiB
# keeps a whole run in one file, and bounds what a reader indexes in memory.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 3  # rotated files kept: events.jsonl.1 .. .3


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    time: float
    kind: str
    node: str | None = None
    outcome: str = "ok"  # ok | error | denied | unknown | ...
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def parse_event(line: bytes) -> Event | None:
    """One JSON line as an ``Event``, or None when it is not one (torn or hand-edited)."""
    try:
        raw = json.loads(line)
        return Event(
            int(raw["id"]),
            float(raw["time"]),
            str(raw["kind"]),
            raw.get("node"),
            raw.get("outcome", "ok"),
            raw.get("data") or {},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class _All:
    """Marker: every node (``None`` is a real key: events about no node)."""


NodeFilter = str | type[_All] | None


class _Index:
    """Event lines in id order, and per node, with the boundary where each file began.

    Lines are kept as the bytes read (about 200 each) and parsed again when asked for: a
    poll parses only the few events it returns, and a 300,000-line log costs tens of MB,
    not the several hundred that parsed events with their dicts would."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.ids: list[int] = []
        self.by_node: dict[str | None, list[bytes]] = {}
        self.node_ids: dict[str | None, list[int]] = {}
        self.file_starts: list[int] = [0]  # positions in ``lines`` where a file's events begin

    def add(self, ev: Event, line: bytes) -> None:
        if self.ids and ev.id <= self.ids[-1]:
            return  # a duplicate (a re-read after a rotation race): ids only grow
        self.lines.append(line)
        self.ids.append(ev.id)
        self.by_node.setdefault(ev.node, []).append(line)
        self.node_ids.setdefault(ev.node, []).append(ev.id)

    def new_file(self) -> None:
        """A rotation: keep this file's and the previous file's events, drop older ones."""
        self.file_starts.append(len(self.lines))
        if len(self.file_starts) > 2:
            cut = self.file_starts[-2]
            kept = self.lines[cut:]
            self.lines, self.ids, self.by_node, self.node_ids = [], [], {}, {}
            for line in kept:
                self.add(_parsed(line), line)
            self.file_starts = [0, self.file_starts[-1] - cut]

    @property
    def last_id(self) -> int:
        return self.ids[-1] if self.ids else 0

    @property
    def first_id(self) -> int | None:
        return self.ids[0] if self.ids else None

    def since(self, since: int, node: NodeFilter) -> list[bytes]:
        if node is _All:
            return self.lines[bisect.bisect_right(self.ids, since) :]
        ids = self.node_ids.get(node)  # type: ignore[arg-type]
        if not ids:
            return []
        return self.by_node[node][bisect.bisect_right(ids, since) :]  # type: ignore[index]


def _parsed(line: bytes) -> Event:
    """A line the index accepted (so it parses)."""
    ev = parse_event(line)
    assert ev is not None
    return ev


class _Append:
    """One ``append`` waiting in a group commit: what to write, and how it ended."""

    __slots__ = ("data", "error", "event", "kind", "node", "outcome", "ready")

    def __init__(self, kind: str, node: str | None, outcome: str, data: dict[str, Any]) -> None:
        self.kind, self.node, self.outcome, self.data = kind, node, outcome, data
        self.ready = threading.Event()
        self.event: Event | None = None
        self.error: BaseException | None = None


class EventLog:
    """One cluster's event log: ``append`` from any process, ``iter``/``latest``/``wait_for``
    to read. An instance builds its index on its first read (writers that only append, like
    the lease hook, never do) and keeps it current from then on, new bytes only."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self._lock = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.RLock()  # the netboot server appends from many threads
        self._index = _Index()
        self._ino: int | None = None  # the file the tail reader is reading
        self._offset = 0  # bytes of it already indexed (always at a line boundary)
        self._line_no = 0  # lines of it already read, for located warnings
        self._batch_lock = threading.Lock()  # the group commit's queue (see ``append``)
        self._queue: list[_Append] = []
        self._writing = False  # an append of this instance leads a batch right now

    # --- tail reader ------------------------------------------------------------------------

    def rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _read_from(self, path: Path, ino: int) -> None:
        """Index the complete lines of ``path`` (inode ``ino``) past the remembered offset."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below; fstat needs the handle
        except FileNotFoundError:
            return
        with fh:
            if os.fstat(fh.fileno()).st_ino != ino:
                return
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # a partial last line waits for its newline
        if not end:
            return
        bad: list[int] = []
        for line in chunk[:end].splitlines():
            self._line_no += 1
            if not line.strip():
                continue
            ev = parse_event(line)
            if ev is None:
                bad.append(self._line_no)
                continue
            self._index.add(ev, bytes(line))
        self._offset += end
        if bad:  # one warning per read, however many lines: located, with the way out
            more = f" (and {len(bad) - 1} more, up to line {bad[-1]})" if len(bad) > 1 else ""
            log.warning(
                "%s:%d: malformed event line skipped%s (a write cut short by a crash, or an edit); "
                "node records are unaffected: `provisioner status` shows each node, and the lines "
                "may be deleted",
                path,
                bad[0],
                more,
            )

    def _refresh(self) -> None:
        with self._mutex:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if self._ino is not None and (st is None or st.st_ino != self._ino):
                # Our file was rotated (or removed/replaced): finish it under its new name.
                old = self._find_rotated(self._ino)
                if old is not None:
                    self._read_from(old, self._ino)
                    self._index.new_file()
                else:  # replaced by an unrelated file (state directory recreated): start over
                    self._index = _Index()
                self._ino, self._offset, self._line_no = None, 0, 0
            if st is None:
                return
            if self._ino is None:
                self._ino = st.st_ino
            elif st.st_size < self._offset:  # truncated in place: start over
                self._index, self._offset, self._line_no = _Index(), 0, 0
            if st.st_size > self._offset:
                self._read_from(self.path, self._ino)

    def _find_rotated(self, ino: int) -> Path | None:
        for n in range(1, self.keep + 1):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.rotated(n)).st_ino == ino:
                    return self.rotated(n)
        return None

    def _tail_id(self, path: Path) -> int:
        """The id of the last event in ``path`` (0: no file, or no event in it), from its last
        4 KiB (a few lines: one append pays for one small read), then 64 KiB, and only when
        those hold no event at all (hand-edited garbage at the end) from every line."""
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                for window in (4096, 65536):
                    fh.seek(max(0, size - window))
                    for line in reversed(fh.read().splitlines()):
                        ev = parse_event(line)
                        if ev is not None:
                            return ev.id
                    if size <= window:
                        return 0
                fh.seek(0)
                return max((ev.id for ev in map(parse_event, fh) if ev is not None), default=0)
        except FileNotFoundError:
            return 0

    # --- writing ----------------------------------------------------------------------------

    def append(self, kind: str, node: str | None = None, outcome: str = "ok", **data: Any) -> Event:
        """Append one event, durably (fsync, and the directory's for a new file); returns once it is.

        The file lock orders every writer, threads of this process included (each batch locks
        its own descriptor). The in-memory mutex is held only to read and update the index, not
        across the write and its fsync: readers of this instance (``up`` polling every node on
        its event loop) then never wait for a disk flush of the netboot threads' appends.

        Group commit: appends that arrive while this instance is writing wait for it, then go
        out together, in arrival order, in one write and one fsync, led by the first of them.
        One fsync per event under the file lock was the ceiling of a 1,000-node run (about 50
        events/s on a busy disk, with every node's next step waiting for its record)."""
        entry = _Append(kind, node, outcome, data)
        with self._batch_lock:
            self._queue.append(entry)
            lead = not self._writing
            if lead:
                self._writing = True
        if not lead:
            entry.ready.wait()  # written by the leader, or handed the lead for the next batch
        if entry.event is None and entry.error is None:
            self._lead()
        if entry.error is not None:
            raise entry.error
        assert entry.event is not None
        return entry.event

    def _lead(self) -> None:
        """Write every append queued so far as one batch, then hand the lead to the next."""
        with self._batch_lock:
            batch, self._queue = self._queue, []
        try:
            self._write(batch)
        except BaseException as exc:  # each waiter raises it, as its own append would have
            for e in batch:
                e.error = exc
        finally:
            with self._batch_lock:
                successor = self._queue[0] if self._queue else None
                self._writing = successor is not None
            for e in batch:
                e.ready.set()
            if successor is not None:
                successor.ready.set()  # neither written nor failed: it leads the next batch

    def _write(self, batch: list[_Append]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self._lock):
            with self._mutex:
                if self._ino is not None:  # this instance keeps an index: bring it up to date
                    self._refresh()
                # A writer that never read (the lease hook, a process per DHCP event) takes the
                # last id from the file's tail instead of indexing the whole log.
                last = self._index.last_id or self._tail_id(self.path) or self._tail_id(self.rotated(1))
                now = time.time()
                events = [
                    Event(last + i, now, e.kind, e.node, e.outcome, e.data) for i, e in enumerate(batch, 1)
                ]
                data = b"".join(ev.to_json().encode() + b"\n" for ev in events)
                size = self.path.stat().st_size if self.path.exists() else 0
                if size and size + len(data) > self.max_bytes:
                    self._rotate()
                    size = 0
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                # A torn line from a crashed writer: start ours on a fresh line.
                if size and _last_byte(self.path) != b"\n":
                    data = b"\n" + data
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if size == 0:
                fsync_dir(self.path.parent)  # a new file: its name must survive a power loss
            with self._mutex:
                if self._ino is not None:
                    self._refresh()
        for e, ev in zip(batch, events, strict=True):
            e.event = ev

    def _rotate(self) -> None:
        """events.jsonl -> .1 -> .2 ...; the oldest beyond ``keep`` is removed. Under the lock."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.rotated(self.keep))
        for n in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.rotated(n), self.rotated(n + 1))
        os.replace(self.path, self.rotated(1))
        fsync_dir(self.path.parent)

    # --- reading ----------------------------------------------------------------------------

    def read(self, since: int = 0, node: NodeFilter = _All) -> list[Event]:
        return list(self.iter(since, node))

    def iter(self, since: int = 0, node: NodeFilter = _All) -> Iterator[Event]:
        """Events with id > ``since`` in id order; only ``node``'s when given (None: events
        about no node). Recent events come from the index; older ones than it holds are
        streamed from the rotated files."""
        with self._mutex:
            self._refresh()
            first = self._index.first_id
            recent = self._index.since(since, node)
        if first is None or since < first - 1:
            yield from self._from_rotated(since, first, node)
        for line in recent:
            yield _parsed(line)

    def _from_rotated(self, since: int, before: int | None, node: NodeFilter) -> Iterator[Event]:
        for n in range(self.keep, 0, -1):
            try:
                fh = open(self.rotated(n), "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break
                    ev = parse_event(line)
                    if ev is None or ev.id <= since or (node is not _All and ev.node != node):
                        continue
                    if before is not None and ev.id >= before:
                        return
                    yield ev

    def latest(self, node: str | None, kind: str | None = None) -> Event | None:
        """The newest event about ``node`` (of ``kind``, if given) in the index."""
        with self._mutex:
            self._refresh()
            lines = self._index.by_node.get(node, [])
            if kind is None:
                return _parsed(lines[-1]) if lines else None
            for line in reversed(lines):
                ev = _parsed(line)
                if ev.kind == kind:
                    return ev
        return None

    def last_id(self) -> int:
        with self._mutex:
            self._refresh()
            return self._index.last_id or self._tail_id(self.rotated(1))

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
