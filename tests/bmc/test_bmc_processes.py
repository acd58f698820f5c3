"""BMC calls in worker processes (``provisioner.workflow.bmcprocs``) against the real emulators.

What `up` relies on: a node's calls all run in one worker, so the session a ``keep`` call leaves
open serves the node's next step; the BMC's state really changes; a BMC error reaches the run
typed, with its node and reason and without the password; a worker that dies fails its calls
as a transient BMC fault and is replaced for the next call; closing leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from provisioner.bmc import BMCAuthError, BMCUnavailable, ControllerSettings
from provisioner.inventory.model import Node
from provisioner.lab.bmc_fleet import BmcFleet
from provisioner.workflow import nodeflow
from provisioner.workflow.bmcprocs import BMCProcesses, Operation

from .conftest import PASSWORD, make_node

FAST = ControllerSettings(command_timeout=5, attempts=2, backoff_initial=0.05, backoff_max=0.2)


def call(
    procs: BMCProcesses, node: Node, op: Operation, keep: bool = False, password: str = PASSWORD
) -> object:
    """One call through the workers, waited for; its error raised here, as the gate does."""
    got: list[tuple[bool, object]] = []
    done = threading.Event()

    def finished(outcome: tuple[bool, object]) -> None:
        got.append(outcome)
        done.set()

    procs.submit(node, password, op, keep, finished)
    assert done.wait(60), "no answer from the BMC worker"
    ok, value = got[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value


def worker_pid(procs: BMCProcesses, node: Node) -> int:
    worker = procs._worker(node.name)
    return worker.proc.pid


def test_a_node_flow_runs_in_its_worker_and_changes_the_bmc(fleet: BmcFleet, secrets_dir: Path) -> None:
    nodes = [make_node(fleet, "ipmi1", 1), make_node(fleet, "rf1", 11)]
    procs = BMCProcesses(2, secrets_dir, FAST, threads=4)
    try:
        procs.start()
        before = fleet.stats_by_protocol()
        for node in nodes:
            pid = worker_pid(procs, node)
            assert pid != os.getpid()
            call(procs, node, nodeflow.POWER_OFF, keep=True)
            call(procs, node, nodeflow.PXE_ONCE, keep=True)
            call(procs, node, nodeflow.POWER_ON)
            assert worker_pid(procs, node) == pid  # the same worker throughout
            assert fleet.state(node.name)["boots"][-1]["device"] == "pxe"  # the one-time PXE took
            assert fleet.state(node.name)["powered"]
        after = fleet.stats_by_protocol()
        # One IPMI session for the three steps: set-up (5) + 3 verified operations (6) + close (1),
        # each datagram answered once; a login per step would be 3 x 5 more.
        assert after["ipmi"]["replies"] - before["ipmi"]["replies"] <= 12 + 2
    finally:
        procs.close()
    for worker_proc in [w.proc for w in procs._workers if w is not None]:
        assert worker_proc.poll() is not None


def test_a_bmc_error_reaches_the_run_typed_without_the_password(fleet: BmcFleet, secrets_dir: Path) -> None:
    node = make_node(fleet, "ipmi2", 2)
    wrong = "not-the-password-93"
    procs = BMCProcesses(1, secrets_dir, FAST, threads=2)
    try:
        with pytest.raises(BMCAuthError) as info:
            call(procs, node, nodeflow.POWER_ON, password=wrong)
    finally:
        procs.close()
    exc = info.value
    assert exc.node == "ipmi2" and not exc.transient
    assert wrong not in str(exc) and PASSWORD not in str(exc)


def test_a_worker_that_dies_fails_its_calls_and_is_replaced(fleet: BmcFleet, secrets_dir: Path) -> None:
    node = make_node(fleet, "ipmi3", 3)
    procs = BMCProcesses(1, secrets_dir, FAST, threads=2)
    try:
        # Killed before it could answer (it is still loading the libraries): the call fails as a
        # transient BMC fault, which the node flow retries.
        got: list[tuple[bool, object]] = []
        done = threading.Event()
        procs.submit(node, PASSWORD, nodeflow.POWER_ON, False, lambda o: (got.append(o), done.set()))
        first = worker_pid(procs, node)
        os.kill(first, signal.SIGKILL)
        assert done.wait(30)
        ok, value = got[0]
        assert not ok and isinstance(value, BMCUnavailable) and value.transient
        assert value.node == "ipmi3" and "worker process exited" in str(value)
        # The next call gets a new worker and works.
        deadline = time.monotonic() + 10
        while procs._workers[0] is not None and procs._workers[0].alive and time.monotonic() < deadline:
            time.sleep(0.05)
        call(procs, node, nodeflow.POWER_OFF)
        assert worker_pid(procs, node) != first
        assert not fleet.state("ipmi3")["powered"]
    finally:
        procs.close()
