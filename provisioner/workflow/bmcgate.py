"""Every BMC command of one run goes through one gate: the limits, the threads, the credentials.

The BMC libraries block, so commands run in a thread pool sized to the global limit; the
``RackLimiter`` (shared with ``provisioner power``/``bootdev``) keeps at most N in flight
overall and M per rack. Each node's password is resolved from its reference once per run.
A test injects a fake BMC by passing ``connect``: a factory returning a ``BMCController``
over a fake ``Driver``, so the controller's retries and verification still run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..bmc import BMCController, ControllerSettings, RackLimiter, connect
from ..inventory.model import Node, Site

T = TypeVar("T")
Connect = Callable[[Node], BMCController]


class BMCGate:
    def __init__(
        self,
        site: Site,
        total: int = 32,
        per_rack: int = 8,
        settings: ControllerSettings | None = None,
        connect_fn: Connect | None = None,
    ) -> None:
        self.site = site
        self.limiter = RackLimiter(total, per_rack)
        # ``cluster.timeouts.bmc_command`` bounds every command of the run.
        self.settings = settings or ControllerSettings.for_node_timeout(site.cluster.timeouts.bmc_command)
        self._connect = connect_fn or self._connect_inventory
        self._pool = ThreadPoolExecutor(max_workers=total, thread_name_prefix="bmc")
        self._passwords: dict[str, str] = {}

    def _connect_inventory(self, node: Node) -> BMCController:
        password = self._passwords.get(node.name)
        if password is None and node.bmc is not None:
            password = self._passwords[node.name] = node.bmc.password.resolve(self.site.base_dir)
        return connect(node, self.site.base_dir, self.settings, password=password)

    def _with_controller(self, node: Node, fn: Callable[[BMCController], T]) -> T:
        """Connect, run ``fn``, always close: an open session holds one of the BMC's few slots."""
        with self._connect(node) as controller:
            return fn(controller)

    async def call(self, node: Node, fn: Callable[[BMCController], T]) -> T:
        """Run ``fn(controller)`` for ``node`` in a thread, within the run's limits."""
        async with self.limiter.slot(node.rack):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._with_controller, node, fn)

    def close(self) -> None:
        """Stop accepting work; threads still inside a BMC call finish on their own deadline."""
        self._pool.shutdown(wait=False, cancel_futures=True)
