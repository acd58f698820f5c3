"""Ctrl-C or SIGTERM during a BMC step that stalls ends ``up`` within 5 s, records consistent."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from provisioner.bmc import BMCController, ControllerSettings, PowerAction
from provisioner.inventory.model import Node
from provisioner.layout import StateLayout
from provisioner.pipeline.stages import HARDWARE_STAGES
from provisioner.pipeline.up import up
from provisioner.state import Phase, StateStore

from .conftest import make_site
from .fakes import FakeDriver, FakeTalos, World

STALL = 60.0  # far longer than the 5 s the run may take to stop


class StallingDriver(FakeDriver):
    """A BMC that takes a minute to act on a power command (its own deadline is 30 s)."""

    def power(self, action: PowerAction) -> None:
        time.sleep(STALL)
        super().power(action)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_stalled_bmc_step_ends_the_run_promptly(tmp_path: Path, signum: int) -> None:
    _interrupted_run(tmp_path, signum)


def test_sigterm_ends_a_background_run_whose_sigint_is_ignored(tmp_path: Path) -> None:
    """A background job of a script (``make rack-r1 & make rack-r2``) inherits SIGINT ignored:
    asyncio then installs no SIGINT handler, and SIGTERM must still end the run."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _interrupted_run(tmp_path, signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted_run(tmp_path: Path, signum: int) -> None:
    site = make_site(tmp_path)
    world = World(site.nodes, StateLayout(site.state_dir).events)
    slow = ControllerSettings(command_timeout=30.0, attempts=1)

    def connect(node: Node) -> BMCController:
        return BMCController(node.name, StallingDriver(world, world.machines[node.name]), slow, True)

    timer = threading.Timer(1.0, os.kill, (os.getpid(), signum))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            up(
                site,
                list(site.nodes),
                "lines",
                poll=0.02,
                talos=FakeTalos(world),
                bmc_connect=connect,
                netboot=None,
                stages=HARDWARE_STAGES,
            )
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5.0
    store = StateStore(site.state_dir)
    # Nothing was recorded for the step in flight: the next run powers the nodes off again.
    assert {store.node(n.name).phase for n in site.nodes} == {Phase.BLANK}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or signum == signal.SIGINT
