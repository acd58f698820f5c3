"""The one limit on BMC work: at most ``total`` commands in flight, at most ``per_rack`` per rack.

The per-rack limit protects what a rack shares (a top-of-rack switch, one boot server, the
BMC network's uplink); the total protects this host. ``up`` (async node flows) and the BMC
commands (``run_on_nodes``) both go through this class, so the two can never disagree on what
"at most N" means. Waiters are served in arrival order (asyncio semaphores are FIFO), so one
big rack never starves the others beyond its own limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class RackLimiter:
    """Async slots keyed by rack. Create it inside the event loop that uses it."""

    def __init__(self, total: int, per_rack: int) -> None:
        if total < 1 or per_rack < 1:
            raise ValueError("concurrency and per_rack must be at least 1")
        self.total_limit = total
        self.per_rack_limit = per_rack
        self._total = asyncio.Semaphore(total)
        self._racks: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def slot(self, rack: str) -> AsyncIterator[None]:
        """Hold one slot of ``rack`` and one of the total (rack first: the narrower queue)."""
        await self.acquire(rack)
        try:
            yield
        finally:
            self.release(rack)

    async def acquire(self, rack: str) -> None:
        """Take the slot ``slot`` holds, for a holder whose use spans several awaits (``BMCGate``
        keeps a node's slot across its off, PXE once and on); pair with ``release``."""
        sem = self._racks.get(rack)
        if sem is None:
            sem = self._racks[rack] = asyncio.Semaphore(self.per_rack_limit)
        await sem.acquire()
        try:
            await self._total.acquire()
        except BaseException:
            sem.release()
            raise

    def release(self, rack: str) -> None:
        self._total.release()
        self._racks[rack].release()
