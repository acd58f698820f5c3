"""Apply only what differs: a journal of applied digests plus a comparison with what is live.

Server-side apply of an unchanged object is still a write (and bumps nothing, but counts as one
request, and on a real cluster wakes every watcher of the kind). So:
- an object the journal has never seen is applied straight away (one request: the first run
  costs one request per object, no read before it);
- an object the journal has seen with the same digest is read and compared: when every field
  we set still has our value, nothing is written (a rerun is reads only);
- anything else (changed inventory, drift, an object deleted by hand) is applied again.
The journal is replaced atomically after every apply, so a kill -9 loses at most the note of
one apply, whose repetition is harmless (SSA is idempotent; names are fixed, never generated).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write
from .kube import Kube, obj_key

Obj = dict[str, Any]


def digest(obj: Obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def covers(live: Any, desired: Any) -> bool:
    """True when ``live`` holds every field of ``desired`` with the same value (lists exactly)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and covers(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


class Applier:
    """Applies objects through ``kube`` and remembers what it applied in ``journal``."""

    def __init__(self, kube: Kube, journal: Path) -> None:
        self.kube = kube
        self.journal = journal
        self.applied: dict[str, str] = self._read()
        self.written: list[str] = []
        self.skipped: list[str] = []
        self.requests = 0  # API requests made to decide and to write (compare GETs + applies)

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.journal.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self) -> None:
        atomic_write(self.journal, json.dumps(self.applied, sort_keys=True, indent=1))

    async def ensure(self, obj: Obj) -> bool:
        """Make ``obj`` live; True when a write was needed."""
        key = obj_key(obj)
        want = digest(obj)
        if self.applied.get(key) == want:
            meta = obj.get("metadata") or {}
            self.requests += 1
            live = await self.kube.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
            if live is not None and covers(live, _comparable(obj)):
                self.skipped.append(key)
                return False
        self.requests += 1
        await self.kube.apply(obj)
        self.applied[key] = want
        self._save()
        self.written.append(key)
        return True

    async def ensure_all(self, objs: list[Obj]) -> int:
        """Apply each in order; the number of writes."""
        n = 0
        for obj in objs:
            n += await self.ensure(obj)
        return n


def _comparable(obj: Obj) -> Obj:
    """What the server must still hold: our fields, minus apiVersion/kind (normalised by the server)."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
