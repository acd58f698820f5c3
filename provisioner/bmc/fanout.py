"""Run one BMC task on many nodes at once, within a global and a per-rack limit.

The per-rack limit protects what racks share (a top-of-rack switch, one boot server,
the BMC management network's uplink); the global limit protects this host. A task's
failure is recorded in its node's result and never stops the others; nothing raised
by a task escapes ``run_on_nodes``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import BMCError
from .limits import RackLimiter

if TYPE_CHECKING:  # the inventory stands above the BMC layer: types only
    from ..inventory.model import Node

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


def _task(fn: Callable[[Node], Any], node: Node) -> NodeResult:
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


def run_on_nodes(
    nodes: Iterable[Node],
    fn: Callable[[Node], Any],
    concurrency: int = 32,
    per_rack: int = 8,
) -> dict[str, NodeResult]:
    """Call ``fn(node)`` for every node; results keyed by node name, in input order.

    The calls run in threads (the BMC libraries block) under the same ``RackLimiter`` that
    ``up`` uses, so both obey one definition of the limits."""
    if concurrency < 1 or per_rack < 1:
        raise ValueError("concurrency and per_rack must be at least 1")
    nodes = list(nodes)

    async def fan_out() -> list[NodeResult]:
        limiter = RackLimiter(concurrency, per_rack)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(
            max_workers=min(concurrency, max(len(nodes), 1)), thread_name_prefix="bmc-fanout"
        ) as pool:

            async def one(node: Node) -> NodeResult:
                async with limiter.slot(node.rack):
                    return await loop.run_in_executor(pool, _task, fn, node)

            return await asyncio.gather(*(one(n) for n in nodes))

    results = asyncio.run(fan_out())
    return {r.node: r for r in results}
