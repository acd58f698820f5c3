"""EventWatch: a node waiting on the event log is woken by an event about it, soon after it is
logged by another writer, and not by events about other nodes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from provisioner.events import EventLog
from provisioner.workflow.eventwatch import EventWatch


def test_a_waiting_node_is_woken_by_its_own_event_within_a_tick(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    watch = EventWatch(EventLog(path), tick=0.05)
    writer = EventLog(path)  # another process's handle, as the netboot service's is

    async def scenario() -> tuple[float, float]:
        async def log_later() -> None:
            await asyncio.sleep(0.3)
            writer.append("config.fetch", node="w2")  # not the one n1 waits for
            await asyncio.sleep(0.3)
            writer.append("config.fetch", node="n1")

        t0 = time.monotonic()
        logger = asyncio.create_task(log_later())
        await watch.wait("n1", timeout=5.0)
        woke = time.monotonic() - t0
        await logger
        t1 = time.monotonic()
        await watch.wait("n1", timeout=0.4)  # nothing more about n1: the timeout ends it
        return woke, time.monotonic() - t1

    woke, idle = asyncio.run(scenario())
    assert 0.55 <= woke < 1.5, woke  # after n1's own event (0.6 s), not w2's (0.3 s)
    assert 0.35 <= idle < 1.0, idle


def test_the_tail_stops_when_nobody_waits(tmp_path: Path) -> None:
    watch = EventWatch(EventLog(tmp_path / "events.jsonl"), tick=0.02)

    async def scenario() -> bool:
        await watch.wait("n1", timeout=0.05)
        await asyncio.sleep(0.1)
        return watch._tail is None

    assert asyncio.run(scenario())


def test_a_watch_outlives_the_event_loop_that_started_its_tail(tmp_path: Path) -> None:
    """A tail cancelled with its loop (the run's loop ended while it slept) is started afresh."""
    path = tmp_path / "events.jsonl"
    watch = EventWatch(EventLog(path), tick=0.5)
    writer = EventLog(path)
    asyncio.run(watch.wait("n1", timeout=0.01))  # its loop ends while the tail sleeps

    async def second() -> float:
        async def log_later() -> None:
            await asyncio.sleep(0.1)
            writer.append("config.fetch", node="n1")

        t0 = time.monotonic()
        logger = asyncio.create_task(log_later())
        await watch.wait("n1", timeout=5.0)
        await logger
        return time.monotonic() - t0

    assert asyncio.run(second()) < 2.0  # woken by the tail, not by the 5 s timeout
