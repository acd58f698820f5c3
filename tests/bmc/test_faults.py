"""100 nodes through fault-injecting emulators: every node ends as requested or is reported failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.bmc import BootDevice, ControllerSettings, connect, run_on_nodes
from provisioner.inventory.model import Node
from provisioner.lab.bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec, RedfishServiceSpec
from provisioner.lab.faults import FaultSpec

from .conftest import PASSWORD, machine, make_node

N_IPMI = N_REDFISH = 50
SETTINGS = ControllerSettings(
    command_timeout=2.0,
    attempts=8,
    backoff_initial=0.05,
    backoff_max=0.5,
    jitter=0.1,
    verify_timeout=1.0,
    boot_verify_timeout=0.5,
    verify_poll=0.1,
)


@pytest.fixture(scope="module")
def faulty_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcFleet]:
    spec = FleetSpec(
        workdir=tmp_path_factory.mktemp("faulty"),
        password=PASSWORD,
        ipmi=tuple(IpmiBmcSpec(machine(i)) for i in range(N_IPMI)),
        redfish=tuple(RedfishServiceSpec((machine(i),)) for i in range(N_IPMI, N_IPMI + N_REDFISH)),
        faults=FaultSpec.acceptance(seed=4),
        hang=3.0,  # longer than the command timeout: an injected timeout really times out
    )
    with BmcFleet(spec) as f:
        yield f


def test_hundred_nodes_power_off_pxe_power_on(faulty_fleet: BmcFleet, secrets_dir: Path) -> None:
    nodes = [make_node(faulty_fleet, f"n{i}", i, rack=f"r{i % 10}") for i in range(N_IPMI + N_REDFISH)]

    def provision(node: Node) -> str:
        with connect(node, secrets_dir, SETTINGS) as ctl:
            ctl.power_off()
            ctl.set_boot_device(BootDevice.PXE)
            ctl.power_on()
        return "done"

    results = run_on_nodes(nodes, provision, concurrency=32, per_rack=8)

    assert list(results) == [n.name for n in nodes]
    stats = faulty_fleet.stats()
    assert stats["error"] > 0 and stats["noop"] > 0 and stats["timeout"] > 0, stats
    for name, r in results.items():
        state = faulty_fleet.state(name)
        if r.ok:
            assert state["powered"] is True, (name, state)
            assert state["boots"] and state["boots"][-1] == {"device": "pxe", "uefi": True}, (name, state)
        else:  # a failure must say which node, which BMC, and why
            assert r.error and name in r.error and faulty_fleet.endpoints[name].protocol in r.error, r
    ok = sum(r.ok for r in results.values())
    assert ok >= 90, {n: r.error for n, r in results.items() if not r.ok}
