"""Every BMC command of one run goes through one gate: the limits, the threads, the credentials.

The BMC libraries block, so each command runs in one of the gate's daemon worker threads; the
``RackLimiter`` (shared with ``provisioner power``/``bootdev``) keeps at most N in flight
overall and M per rack. Each node's password is resolved from its reference once per run.

A node's BMC visit is one unit: the slot taken for its power off is kept (like its session) for
its PXE once and power on, and given back with the power-on. Served first come, first served per
call, 1,000 nodes went breadth-first (every node off, then every node PXE, then on), so no node
booted before the last was powered off, and a thousand sessions sat idle at once (threads,
sockets, keep-alives): at 1,000 nodes the first boot came after 73 s instead of after one visit.
A test injects a fake BMC by passing ``connect``: a factory returning a ``BMCController``
over a fake ``Driver``, so the controller's retries and verification still run.

With ``processes`` (`up --bmc-processes`; by default one for a large fan-out, see
``default_processes``) the calls run in that many worker processes instead of this one's threads
(``bmcprocs``: the protocol libraries' CPU on another core); the limits, slots and passwords stay
here. Those calls must pickle (``operator.methodcaller`` or a module-level function); an injected
``connect`` keeps them here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..bmc import BMCController, ControllerSettings, RackLimiter, connect, registry
from ..inventory.model import Node, Site
from .bmcprocs import BMCProcesses
from .sessions import HeldControllers

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


class _Workers:
    """Daemon threads that run the gate's BMC calls: one started for each of the first ``size``
    calls, then kept. A thread per call cost more than the call: ``Thread.start`` blocks the event
    loop until the new thread runs, 38 s of a 1,000-node run on a loaded 2-core machine. Daemons,
    so an interrupted run never waits for one stuck in a BMC command (bounded by its deadline)."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._started = 0

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)
        if self._started < self._size:  # only the event loop's thread submits: no lock needed
            self._started += 1
            threading.Thread(target=self._loop, name=f"bmc-worker-{self._started}", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._jobs.get()()


def _portable(node: Node) -> bool:
    """Whether a worker process can drive ``node``: its protocol is one of the product's own
    (registered when ``provisioner.bmc`` is imported). One a caller registered at run time (a
    test's toy protocol) exists only in this process, so its calls stay here."""
    if node.bmc is None:
        return False
    factory = registry.lookup(node.bmc.protocol).factory
    return getattr(factory, "__module__", "").startswith("provisioner.bmc.")


# BMC worker processes of a run unless the operator says (``up --bmc-processes N``): one for a
# fan-out of AUTO_PROCESSES_FROM nodes or more on a machine with two cores or more, else none.
# Below that the run waits on its delays (boots, installs), not on the libraries' CPU: bench-scale's
# fleet at 100 nodes took 21.5-21.6 s in-process and 20.6-21.7 s with one worker. At 1,000 nodes
# one process is bound by one core from the first power-off to the last power-on (the protocol
# libraries and the nodes' own work behind one interpreter lock), and one worker moves the
# libraries' share to the other core: interleaved runs of bench-scale's fleet (`up` with its
# netboot service), in-process 2.04-2.11x the ideal wall time and 159 MB, one worker 1.71-1.82x
# and 194-195 MB (the 200 MB target; 186 MB since the Talos client's TLS buffers are 64 KiB), two
# workers 1.65-1.83x and 232 MB. The same machine's speed drifts within the hour (the same run
# took 48 to 78 CPU s of the whole machine), so only interleaved runs compare. A worker's private
# memory is 50-60 MB: its interpreter and libraries (pydantic's machinery for the BMC settings,
# pyghmi, sushy, requests, cryptography), 64 threads, the nodes' entries and sessions. (Forking the
# workers from `up`, to share its imported libraries, was measured too: the pages either process
# writes after the fork get copied, the memory came out the same, the wall about 1 s shorter.)
AUTO_PROCESSES_FROM = 200


def default_processes(bmc_nodes: int, cores: int | None = None) -> int:
    """The BMC worker processes for a run driving ``bmc_nodes`` BMCs on ``cores`` usable cores
    (default: this process's CPU affinity), when the operator does not choose."""
    if cores is None:
        cores = len(os.sched_getaffinity(0))
    return 1 if bmc_nodes >= AUTO_PROCESSES_FROM and cores >= 2 else 0


class BMCGate:
    def __init__(
        self,
        site: Site,
        total: int = 32,
        per_rack: int = 8,
        settings: ControllerSettings | None = None,
        connect_fn: Connect | None = None,
        processes: int | BMCProcesses = 0,
    ) -> None:
        self.site = site
        self.limiter = RackLimiter(total, per_rack)
        # ``cluster.timeouts.bmc_command`` bounds every command of the run.
        self.settings = settings or ControllerSettings.for_node_timeout(site.cluster.timeouts.bmc_command)
        self._connect = connect_fn or self._connect_inventory
        self._passwords: dict[str, str] = {}
        # Controllers kept open between a node's consecutive steps (``call(..., keep=True)``).
        self._held = HeldControllers()
        # Nodes whose limiter slot is kept for their next call (node -> rack); event loop only.
        self._slots: dict[str, str] = {}
        self._workers = _Workers(total)
        # Worker processes: given (shared, the caller closes them), or made and closed here.
        self._procs: BMCProcesses | None = None
        self._own_procs = False
        if isinstance(processes, BMCProcesses):
            self._procs = processes
        elif processes > 0 and connect_fn is None:
            self._procs = BMCProcesses(processes, site.base_dir, self.settings, threads=total)
            self._own_procs = True

    def _password(self, node: Node) -> str | None:
        password = self._passwords.get(node.name)
        if password is None and node.bmc is not None:
            password = self._passwords[node.name] = node.bmc.password.resolve(self.site.base_dir)
        return password

    def _connect_inventory(self, node: Node) -> BMCController:
        return connect(node, self.site.base_dir, self.settings, password=self._password(node))

    async def release(self, node: Node) -> None:
        """Close the controller a ``keep`` call left open for ``node`` and give back its slot
        (none: nothing to do)."""
        rack = self._slots.pop(node.name, None)
        if rack is not None:
            self.limiter.release(rack)
        if self._procs is not None and _portable(node):
            self._procs.release(node.name)
            return
        controller = self._held.pop(node.name)
        if controller is not None:
            await asyncio.to_thread(controller.close)

    async def call(self, node: Node, fn: Callable[[BMCController], T], keep: bool = False) -> T:
        """Run ``fn(controller)`` for ``node`` in a worker thread, within the run's limits;
        ``keep`` leaves the controller open and keeps the node's slot for its next call (see
        ``sessions``; ``release`` gives both back when the node stops early).

        When the run is interrupted (Ctrl-C, SIGTERM) the waiting task is cancelled at once and
        the process exits without joining a worker stuck in a BMC command (daemons); the command
        is bounded by its own deadline anyway, and its step was not recorded, so the next run
        redoes it."""
        if self._slots.pop(node.name, None) is None:
            await self.limiter.acquire(node.rack)
        kept = False
        try:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()

            def done(outcome: tuple[bool, object]) -> None:  # in a worker thread
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                    loop.call_soon_threadsafe(_settle, future, outcome)

            def work() -> None:
                try:
                    outcome: tuple[bool, object] = (
                        True,
                        self._held.run(node.name, lambda: self._connect(node), fn, keep),
                    )
                except BaseException as exc:  # handed to the waiting task
                    outcome = (False, exc)
                done(outcome)

            if self._procs is not None and _portable(node):
                password = self._password(node)  # a missing secret fails here, before any traffic
                self._procs.submit(node, password, fn, keep, done)
            else:
                self._workers.submit(work)
            result = await future
            kept = keep
            return result
        finally:
            if kept:
                self._slots[node.name] = node.rack
            else:
                self.limiter.release(node.rack)

    def close(self) -> None:
        """Close the controllers still held (a run interrupted between a node's steps). Nothing
        to join: threads still inside a BMC call end on their own deadline. Worker processes this
        gate started are stopped and waited for (they close the sessions they hold)."""
        self._slots.clear()  # the run is over: nobody waits for a slot any more
        if self._procs is not None and self._own_procs:
            self._procs.close()
        self._held.close_all()
