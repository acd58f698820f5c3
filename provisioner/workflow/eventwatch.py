"""One reader of the event log for every node waiting on it, instead of one poll per node.

A node waiting for its config fetch (logged by the netboot service, another process) used to read
the log itself once per poll interval: it noticed the fetch up to an interval (2 s) late, and a
thousand waiting nodes read the log 500 times a second. ``EventWatch`` tails the log for all of
them every ``TICK`` and wakes a node as soon as an event about it arrives; the node then checks
the log itself, as before, so a wake-up it misses or a spurious one only costs it one interval.
The tail runs only while some node waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..events import EventLog

log = logging.getLogger(__name__)

TICK = 0.2  # seconds between two reads of the log while nodes wait


class EventWatch:
    def __init__(self, events: EventLog, tick: float = TICK) -> None:
        self._events = events
        self._tick = tick
        self._waiters: dict[str, asyncio.Event] = {}
        self._tail: asyncio.Task[None] | None = None

    async def wait(self, node: str, timeout: float) -> None:
        """Return when an event about ``node`` is logged, or after ``timeout`` seconds."""
        woken = self._waiters.setdefault(node, asyncio.Event())
        if self._tail is None or self._tail.done():  # done: cancelled with an earlier event loop
            self._tail = asyncio.get_running_loop().create_task(self._follow(self._events.last_id()))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout)
        finally:
            if self._waiters.get(node) is woken:
                del self._waiters[node]

    async def _follow(self, cursor: int) -> None:
        while True:
            await asyncio.sleep(self._tick)
            if not self._waiters:  # nothing between this test and the return yields to a waiter
                self._tail = None
                return
            try:
                for ev in self._events.iter(cursor):
                    cursor = ev.id
                    woken = self._waiters.get(ev.node) if ev.node is not None else None
                    if woken is not None:
                        woken.set()
            except Exception:  # the waiters poll the log themselves; the next wait starts a tail
                log.debug("event watch: reading the log failed", exc_info=True)
                self._tail = None
                return
