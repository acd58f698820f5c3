"""Every BMC command of one run goes through one gate: the limits, the threads, the credentials.

The BMC libraries block, so each command runs in a daemon thread of its own; the
``RackLimiter`` (shared with ``provisioner power``/``bootdev``) keeps at most N in flight
overall and M per rack. Each node's password is resolved from its reference once per run.
A test injects a fake BMC by passing ``connect``: a factory returning a ``BMCController``
over a fake ``Driver``, so the controller's retries and verification still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..bmc import BMCController, ControllerSettings, RackLimiter, connect
from ..inventory.model import Node, Site

T = TypeVar("T")
Connect = Callable[[Node], BMCController]


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, object]) -> None:
    if future.done():  # cancelled meanwhile (the run was interrupted)
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        assert isinstance(value, BaseException)
        future.set_exception(value)


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
        self._passwords: dict[str, str] = {}
        # Controllers kept open between a node's consecutive steps (``call(..., keep=True)``).
        self._held: dict[str, BMCController] = {}
        self._held_lock = threading.Lock()

    def _connect_inventory(self, node: Node) -> BMCController:
        password = self._passwords.get(node.name)
        if password is None and node.bmc is not None:
            password = self._passwords[node.name] = node.bmc.password.resolve(self.site.base_dir)
        return connect(node, self.site.base_dir, self.settings, password=password)

    def _with_controller(self, node: Node, fn: Callable[[BMCController], T], keep: bool) -> T:
        """Run ``fn`` on the node's held controller, or a new one (whose first command logs in).

        With ``keep`` the controller (its IPMI session, its Redfish connection and discovered
        system) stays open for the node's next step: off, PXE once and on then cost one login
        instead of three. Without it, or when ``fn`` fails, it is closed: an open session holds
        one of the BMC's few slots, and after a fault the next step logs in afresh."""
        with self._held_lock:
            controller = self._held.pop(node.name, None)
        if controller is None:
            controller = self._connect(node)
        try:
            result = fn(controller)
        except BaseException:
            controller.close()
            raise
        if keep:
            with self._held_lock:
                self._held[node.name] = controller
        else:
            controller.close()
        return result

    async def release(self, node: Node) -> None:
        """Close the controller a ``keep`` call left open for ``node`` (none: nothing to do)."""
        with self._held_lock:
            controller = self._held.pop(node.name, None)
        if controller is not None:
            await asyncio.to_thread(controller.close)

    async def call(self, node: Node, fn: Callable[[BMCController], T], keep: bool = False) -> T:
        """Run ``fn(controller)`` for ``node`` in a thread, within the run's limits; ``keep``
        leaves the controller open for the node's next call (see ``_with_controller``).

        The thread is a daemon of its own (not a pool's): when the run is interrupted
        (Ctrl-C, SIGTERM) the waiting task is cancelled at once and the process exits without
        joining a thread stuck in a BMC command; the command is bounded by its own deadline
        anyway, and its step was not recorded, so the next run redoes it."""
        async with self.limiter.slot(node.rack):
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()

            def work() -> None:
                try:
                    outcome: tuple[bool, object] = (True, self._with_controller(node, fn, keep))
                except BaseException as exc:  # handed to the waiting task
                    outcome = (False, exc)
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                    loop.call_soon_threadsafe(_settle, future, outcome)

            threading.Thread(target=work, name=f"bmc-{node.name}", daemon=True).start()
            return await future

    def close(self) -> None:
        """Close the controllers still held (a run interrupted between a node's steps). Nothing
        to join: threads still inside a BMC call end on their own deadline."""
        with self._held_lock:
            held, self._held = list(self._held.values()), {}
        for controller in held:
            controller.close()
