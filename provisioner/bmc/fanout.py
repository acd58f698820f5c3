"""Run one BMC task on many nodes at once, within a global and a per-rack limit.

The per-rack limit protects what racks share (a top-of-rack switch, one boot server,
the BMC management network's uplink); the global limit protects this host. A task's
failure is recorded in its node's result and never stops the others; nothing raised
by a task escapes ``run_on_nodes``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..inventory.model import Node
from .base import BMCError

log = logging.getLogger(__name__)


@dataclass
class NodeResult:
    node: str
    rack: str
    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        value = self.value.as_dict() if hasattr(self.value, "as_dict") else self.value
        return {
            "node": self.node,
            "rack": self.rack,
            "ok": self.ok,
            "value": value,
            "error": self.error,
            "error_type": self.error_type,
            "seconds": round(self.seconds, 3),
        }


def run_on_nodes(
    nodes: Iterable[Node],
    fn: Callable[[Node], Any],
    concurrency: int = 32,
    per_rack: int = 8,
) -> dict[str, NodeResult]:
    """Call ``fn(node)`` for every node; results keyed by node name, in input order."""
    if concurrency < 1 or per_rack < 1:
        raise ValueError("concurrency and per_rack must be at least 1")
    nodes = list(nodes)
    queues: dict[str, deque[Node]] = {}
    for n in nodes:
        queues.setdefault(n.rack, deque()).append(n)
    results: dict[str, NodeResult] = {}
    running: dict[str, int] = dict.fromkeys(queues, 0)
    cond = threading.Condition()
    in_flight = 0

    def task(node: Node) -> NodeResult:
        start = time.monotonic()
        try:
            value = fn(node)
            return NodeResult(node.name, node.rack, True, value, seconds=time.monotonic() - start)
        except BMCError as exc:
            return NodeResult(
                node.name,
                node.rack,
                False,
                error=str(exc),
                error_type=type(exc).__name__,
                seconds=time.monotonic() - start,
            )
        except Exception as exc:  # a task's bug or a bad secret: that node fails, the rest go on
            log.debug("node %s: task failed", node.name, exc_info=True)
            return NodeResult(
                node.name,
                node.rack,
                False,
                error=f"node {node.name}: {exc}",
                error_type=type(exc).__name__,
                seconds=time.monotonic() - start,
            )

    def finished(node: Node, fut: Future[NodeResult]) -> None:
        nonlocal in_flight
        with cond:
            results[node.name] = fut.result()
            running[node.rack] -= 1
            in_flight -= 1
            cond.notify()

    with (
        ThreadPoolExecutor(
            max_workers=min(concurrency, max(len(nodes), 1)), thread_name_prefix="bmc-fanout"
        ) as pool,
        cond,
    ):
        while any(queues.values()):
            # Round-robin over racks so one big rack does not starve the others.
            started = False
            for rack, queue in queues.items():
                if queue and running[rack] < per_rack and in_flight < concurrency:
                    node = queue.popleft()
                    running[rack] += 1
                    in_flight += 1
                    started = True
                    fut = pool.submit(task, node)
                    fut.add_done_callback(functools.partial(finished, node))
            if not started:
                cond.wait()
    return {n.name: results[n.name] for n in nodes}
