"""IPMI BMC emulators listening on addresses of their own (as the fleet's 127.2.x.y and the lab's
namespace addresses) answer every session at once, however the client comes.

Regression: the emulators used pyghmi's I/O thread, whose wake-ups went to 127.0.0.1 at the port of
the process's first BMC. With BMCs on other addresses those wake-ups were lost: no BMC but the first
answered until the first had received a datagram, and an answer delayed by the injected latency
left only with the client's next retransmission (log-ins then ran out of retries), as did any
datagram the I/O thread routed just after the serving thread had looked for work. The fleet test
(BMCs on 127.2.x.y) lost nodes' disk step, the last and least busy BMC step, to "session set-up"
time-outs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from provisioner.bmc import BootDevice, PowerState, connect
from provisioner.bmc.controller import ControllerSettings
from provisioner.lab.bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec
from provisioner.lab.faults import FaultSpec

from .conftest import PASSWORD, machine, make_node

N = 8
LATENCY = 0.02  # per datagram the BMC sends
# One attempt per command: a BMC that does not answer a log-in within pyghmi's retries fails here.
ONE_TRY = ControllerSettings(command_timeout=5, attempts=1, verify_timeout=2, boot_verify_timeout=1)


@pytest.fixture(scope="module")
def own_address_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcFleet]:
    spec = FleetSpec(
        workdir=tmp_path_factory.mktemp("own-address"),
        password=PASSWORD,
        ipmi=tuple(IpmiBmcSpec(machine(i, f"a{i}"), address=f"127.0.3.{i + 1}") for i in range(N)),
        faults=FaultSpec(latency=LATENCY),
    )
    with BmcFleet(spec) as f:
        yield f


def _visit(fleet: BmcFleet, secrets_dir: Path, i: int) -> float:
    """One node's two BMC visits as ``up`` makes them: off, PXE once and on; later the disk."""
    node = make_node(fleet, f"a{i}", i)
    start = time.monotonic()
    with connect(node, secrets_dir, ONE_TRY) as ctl:
        ctl.power_off()
        ctl.set_boot_device(BootDevice.PXE)
        ctl.power_on()
    with connect(node, secrets_dir, ONE_TRY) as ctl:
        ctl.set_boot_device(BootDevice.DISK, persistent=True)
    return time.monotonic() - start


def test_a_bmc_answers_before_the_first_bmc_of_its_process_was_ever_asked(
    own_address_fleet: BmcFleet, secrets_dir: Path
) -> None:
    # Runs first in this module: no BMC of the emulator process has served anything yet, and
    # a0 (the process's first BMC) is never contacted by this test.
    last = N - 1
    start = time.monotonic()
    with connect(make_node(own_address_fleet, f"a{last}", last), secrets_dir, ONE_TRY) as ctl:
        assert ctl.power_state() in (PowerState.ON, PowerState.OFF)
    # A log-in and a command are 7 datagrams from the BMC: 0.14 s of latency; one client
    # retransmission alone would cost 0.5 s or more.
    assert time.monotonic() - start < 2.0
    assert own_address_fleet.stats()["requests"] == 1


def test_short_visits_in_a_row_cost_round_trips_not_retransmissions(
    own_address_fleet: BmcFleet, secrets_dir: Path
) -> None:
    durations: list[float] = []
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):  # many sessions in a row from the same client, as a run makes them
            durations += pool.map(lambda i: _visit(own_address_fleet, secrets_dir, i), range(N))
    for i in range(N):
        state = own_address_fleet.state(f"a{i}")
        assert state["powered"] is True
        assert state["boot"] == {"device": "disk", "persistent": True, "uefi": True}
    # Two log-ins, five commands and two log-outs: 22 datagrams from the BMC, 0.44 s of latency
    # (0.3-0.7 s measured on a loaded 2-core host). Answers left only with the client's
    # retransmissions: a median visit took 7.5 s, and log-ins failed.
    assert statistics.median(durations) < 2.5, durations
