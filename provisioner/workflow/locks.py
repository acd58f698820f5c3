"""Per-rack and cluster locks, so two operators never drive the same hardware at once.

Locks are ``flock`` on files in the state directory: the kernel releases them when the
holder dies (kill -9 included), so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..layout import StateLayout


class LockBusy(InputError):
    """Another run holds the lock; nothing was touched."""

    exit_code = 1


@contextlib.contextmanager
def hold(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise LockBusy(
                f"{what} is being provisioned by another run (pid {holder}); wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def hold_racks(layout: StateLayout, racks: list[str]) -> Iterator[None]:
    """Take every rack's lock (sorted, so two runs can never deadlock)."""
    with contextlib.ExitStack() as stack:
        for rack in sorted(set(racks)):
            stack.enter_context(hold(layout.rack_lock(rack), f"rack {rack}"))
        yield


def holder(path: Path) -> int | None:
    """The pid holding ``path``'s lock, or None; read from ``/proc/locks``, never by trying the
    lock (a probe that took it, however briefly, could turn a starting run away)."""
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[4] == "-1":
            continue
        dev_ino = fields[5].split(":")
        if len(dev_ino) == 3 and int(dev_ino[2]) == st.st_ino and (
            (int(dev_ino[0], 16), int(dev_ino[1], 16)) == (os.major(st.st_dev), os.minor(st.st_dev))
        ):
            return int(fields[4])
    return None


def cluster_lock(layout: StateLayout) -> contextlib.AbstractContextManager[None]:
    return hold(layout.cluster_lock, "the cluster")
