"""The simulated etcd cluster the control-plane stand-ins share (a stand-in for real etcd).

Control planes may be served by different emulator processes, so their etcd is one small JSON
file under an advisory lock: who bootstrapped (every successful Bootstrap RPC is recorded, which
is how the fleet test proves bootstrap happened exactly once) and who is a member. A second
Bootstrap is refused with AlreadyExists, as Talos refuses it once etcd has data.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SharedEtcd:
    def __init__(self, path: Path, join_delay: float = 0.0) -> None:
        self.path = path
        self.join_delay = join_delay

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 1 << 20)
            state: dict[str, Any] = json.loads(raw) if raw else {"bootstraps": [], "installed": {}}
            yield state
            data = json.dumps(state).encode()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, data)
        finally:
            os.close(fd)

    def installed(self, node: str) -> None:
        """A control plane's installed system is up: once etcd exists, it joins by itself (as Talos
        control planes do, through the endpoint), first as a learner for ``join_delay``."""
        with self._locked() as state:
            state["installed"][node] = time.time()

    def bootstrap(self, node: str) -> bool:
        """Record a Bootstrap on ``node``; False when etcd already has data (AlreadyExists)."""
        with self._locked() as state:
            if state["bootstraps"]:
                return False
            state["bootstraps"].append(node)
            state["bootstrapped_at"] = time.time()
            state["installed"].setdefault(node, time.time())
            return True

    def members(self) -> list[tuple[str, bool]] | None:
        """(member, is_learner) for every installed control plane; None before bootstrap."""
        with self._locked() as state:
            if not state["bootstraps"]:
                return None
            first, since = state["bootstraps"][0], state["bootstrapped_at"]
            now = time.time()
            return [
                (m, m != first and now - max(t, since) < self.join_delay)
                for m, t in sorted(state["installed"].items())
            ]

    def bootstraps(self) -> list[str]:
        try:
            return list(json.loads(self.path.read_text() or "{}").get("bootstraps", []))
        except FileNotFoundError:
            return []
