"""A run's BMC calls in worker processes, so the protocol libraries use every core.

pyghmi (an IPMI session's RAKP and AES in Python) and sushy on requests (HTTP, headers and JSON
in Python) spend 1-2.5 ms of CPU per BMC round trip on a 2-core host. In one interpreter that
CPU is serialised behind one lock: a 1,000-node `up` spent a third of its CPU in them, and
bench-bmc's client, at 32 calls in flight, was bound by one core while the other waited.

So with ``up --bmc-processes N``, ``BMCGate`` hands its calls to N worker processes (``python -m
provisioner.workflow.bmcprocs``, started over a socket pair: no ``multiprocessing`` start
method re-importing the caller's main module). Each node always goes to the same worker (by a
stable hash of its name), because the session a ``keep`` call leaves open lives there. A worker
runs each call in one of its threads through the same ``BMCController`` (retries, deadlines,
verification) the in-process path uses; what it returns or raises is pickled back, typed
(``BMCError`` carries node, endpoint, action and reason, never the password).

A worker that dies fails the calls it had in flight (``BMCUnavailable``: the step is retried
like any transient fault) and is started again for the next call; its held sessions are gone,
so the next step logs in afresh. Workers ignore SIGINT (the run's own Ctrl-C handling closes
them) and exit when their socket closes, so a killed run leaves none behind. ``close`` waits for
them: their CPU is then part of the run's own (``wait4`` of the run includes them).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..bmc import BMCController, BMCUnavailable, ControllerSettings, connect
from ..inventory.model import Node
from .sessions import HeldControllers

log = logging.getLogger(__name__)

Outcome = tuple[bool, object]
Done = Callable[[Outcome], None]
# A call: what to do with the node's controller. Must pickle: ``operator.methodcaller`` or a
# module-level function.
Operation = Callable[[BMCController], Any]


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` that says what it was (the run
    fails the node on it, as it would on the original)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class _Worker:
    """One worker process, as the run sees it: its socket, its calls in flight, its reader."""

    def __init__(self, index: int, base_dir: Path, settings: ControllerSettings, threads: int) -> None:
        self.index = index
        parent, child = socket.socketpair()
        # The password goes over this socket with a node's first call: never argv or environment.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner.workflow.bmcprocs", str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.conn.send((base_dir, settings, threads))
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self.pending: dict[int, tuple[str, Done]] = {}  # call id -> (node, its callback)
        self.known: set[str] = set()  # nodes whose inventory entry and password it has
        self.alive = True
        self.ready = threading.Event()  # it has loaded the BMC libraries
        threading.Thread(target=self._read, name=f"bmc-proc-{index}-reader", daemon=True).start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _read(self) -> None:
        try:
            while True:
                call_id, ok, value = self.conn.recv()
                if call_id == 0:  # the worker's "ready"
                    self.ready.set()
                    continue
                with self._lock:
                    entry = self.pending.pop(call_id, None)
                if entry is not None:
                    entry[1]((ok, value))
        except (EOFError, OSError):
            pass
        except Exception:  # an answer that does not unpickle: the worker is not trusted further
            log.exception("BMC worker %d sent an unreadable answer", self.index)
        self._lost()

    def _lost(self) -> None:
        self.ready.set()  # nobody waits for a worker that is gone
        with self._lock:
            self.alive = False
            pending, self.pending = self.pending, {}
        for name, done in pending.values():
            done((False, self.gone(name)))

    def gone(self, node: str) -> BMCUnavailable:
        """What a call learns when this worker died under it: transient, the step is retried."""
        return BMCUnavailable(node, f"worker process {self.index}", "call", "the BMC worker process exited")

    def stop(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(("stop",))
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:  # a call hung past its deadline: the run is over anyway
            self.proc.kill()
            self.proc.wait()


class BMCProcesses:
    """The worker processes of one run (see the module docstring)."""

    def __init__(self, count: int, base_dir: Path, settings: ControllerSettings, threads: int) -> None:
        self.count = max(1, count)
        self._base_dir = base_dir
        self._settings = settings
        self._threads = max(1, threads)
        self._workers: list[_Worker | None] = [None] * self.count
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    def _worker(self, name: str) -> _Worker:
        return self._worker_at(zlib.crc32(name.encode()) % self.count)

    def _worker_at(self, index: int) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the run's BMC workers are closed")
            worker = self._workers[index]
            if worker is None or not worker.alive:
                if worker is not None:
                    worker.stop(timeout=1.0)
                worker = self._workers[index] = _Worker(index, self._base_dir, self._settings, self._threads)
            return worker

    def start(self, timeout: float = 60.0, wait: bool = True) -> None:
        """Start every worker now, instead of on the first calls (which would otherwise wait for
        it with their slots held); ``wait``: until each has loaded the BMC libraries."""
        workers = [self._worker_at(i) for i in range(self.count)]
        for worker in workers if wait else ():
            worker.ready.wait(timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the running workers (Linux ``/proc``), for benchmarks
        that account for them before they are waited for."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        with self._lock:
            procs = [w.proc for w in self._workers if w is not None]
        for proc in procs:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def submit(self, node: Node, password: str | None, op: Operation, keep: bool, done: Done) -> None:
        """Run ``op`` on ``node``'s controller in its worker; ``done`` gets the outcome, in the
        worker's reader thread."""
        worker = self._worker(node.name)
        call_id = next(self._ids)
        with worker._lock:
            alive = worker.alive
            if alive:
                worker.pending[call_id] = (node.name, done)
        if not alive:
            done((False, worker.gone(node.name)))
            return
        first = node.name not in worker.known
        try:
            worker.send(("call", call_id, node.name, (node, password) if first else None, op, keep))
        except (OSError, ValueError):
            with worker._lock:
                entry = worker.pending.pop(call_id, None)
            if entry is not None:  # else the reader already failed it
                done((False, worker.gone(node.name)))
            return
        worker.known.add(node.name)

    def release(self, name: str) -> None:
        """Close the controller a ``keep`` call left open for ``name`` in its worker."""
        with self._lock:
            worker = self._workers[zlib.crc32(name.encode()) % self.count]
        if worker is not None and worker.alive:
            with contextlib.suppress(OSError, ValueError):
                worker.send(("release", name))

    def close(self) -> None:
        """Stop every worker and wait for it (held sessions are closed by the worker)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, [None] * self.count
        for worker in workers:
            if worker is not None:
                worker.stop()


# -- the worker process -------------------------------------------------------------------------
def _serve(conn: Connection) -> None:
    base_dir, settings, threads = conn.recv()
    for module in ("provisioner.bmc.ipmi", "provisioner.bmc.redfish"):  # what the factories load
        importlib.import_module(module)
    conn.send((0, True, "ready"))
    nodes: dict[str, tuple[Node, str | None]] = {}
    held = HeldControllers()
    send_lock = threading.Lock()
    jobs: queue.SimpleQueue[tuple[int, str, Operation, bool] | None] = queue.SimpleQueue()

    def answer(call_id: int, outcome: Outcome) -> None:
        ok, value = outcome
        if not ok:
            assert isinstance(value, BaseException)
            value = _portable(value)
        with send_lock, contextlib.suppress(OSError, ValueError):  # the run is gone
            try:
                conn.send((call_id, ok, value))
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # a result that cannot cross
                conn.send((call_id, False, RuntimeError(f"{type(value).__name__} cannot be sent: {exc}")))

    def run(call_id: int, name: str, op: Operation, keep: bool) -> None:
        def connected() -> BMCController:
            node, password = nodes[name]
            return connect(node, base_dir, settings, password=password)

        try:
            outcome: Outcome = (True, held.run(name, connected, op, keep))
        except BaseException as exc:  # handed to the run
            outcome = (False, exc)
        answer(call_id, outcome)

    def loop() -> None:
        while (job := jobs.get()) is not None:
            run(*job)

    workers = [threading.Thread(target=loop, name=f"bmc-{i}", daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    try:
        while True:
            message = conn.recv()
            if message[0] == "call":
                _, call_id, name, entry, op, keep = message
                if entry is not None:
                    nodes[name] = entry
                jobs.put((call_id, name, op, keep))
            elif message[0] == "release":
                controller = held.pop(message[1])
                if controller is not None:
                    controller.close()
            else:  # stop
                break
    except (EOFError, OSError):
        pass  # the run ended or was killed
    with contextlib.suppress(Exception):  # logging out of BMCs on the way out, best effort
        held.close_all()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run closes its workers on Ctrl-C
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s bmc-worker: %(message)s")
    with contextlib.closing(Connection(int(argv[0]))) as conn:
        _serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
