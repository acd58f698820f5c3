"""A node's boot wait against a real (emulated) IPMI BMC on loopback: a silent node is
power-cycled a bounded number of times, then failed with a reason; a config fetch that
happened while the tool was down is recovered from the event log without touching the BMC.

Only the BMC is contacted (127.0.0.1); the node's own address is never dialled here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ipmi_client import ipmitool

from provisioner.events import CONFIG_FETCH, EventLog
from provisioner.inventory import load_inventory
from provisioner.inventory.model import Node, Site
from provisioner.lab.bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec
from provisioner.lab.machine import MachineSpec
from provisioner.pipeline.context import RunContext
from provisioner.state import Phase, StateStore
from provisioner.workflow import nodeflow
from provisioner.workflow.bmcgate import BMCGate
from provisioner.workflow.progress import Progress

PASSWORD = "nodeflow-pw-51c2"
UUID = "7ab0c7b2-0c1d-4a4e-9d1a-00000000aa01"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcFleet]:
    spec = FleetSpec(
        workdir=tmp_path_factory.mktemp("fleet"),
        password=PASSWORD,
        ipmi=(IpmiBmcSpec(MachineSpec(name="silent", uuid=UUID, serial="S1", macs=("52:54:00:aa:00:01",))),),
    )
    with BmcFleet(spec) as f:
        yield f


def _site(tmp_path: Path, fleet: BmcFleet, boot_timeout: float, retries: int) -> Site:
    (tmp_path / "bmc-password").write_text(PASSWORD + "\n")
    os.chmod(tmp_path / "bmc-password", 0o600)
    ep = fleet.endpoints["silent"]
    (tmp_path / "site.yaml").write_text(
        f"""
cluster:
  name: flow
  bundle: distro-full
  state_dir: {tmp_path / "state"}
  timeouts: {{boot: {boot_timeout}, boot_retries: {retries}}}
networks:
  management: {{subnet: 10.99.0.0/24, gateway: 10.99.0.1, vip: 10.99.0.10}}
  metallb: {{range: 10.99.0.100-10.99.0.110}}
  netboot: {{server: 10.99.0.1}}
nodes:
  - name: silent
    rack: r1
    role: controlplane
    bmc: {{protocol: ipmi, address: {ep.address}, port: {ep.port}, username: admin,
          password: "file:bmc-password", cipher_suite: 3}}
    boot: {{mode: bios, mac: "52:54:00:aa:00:01"}}
    uuid: {UUID}
    ip: 10.99.0.11
    data_disks: [/dev/sdb]
"""
    )
    return load_inventory(tmp_path / "site.yaml").site


class _NothingAnswers:
    """The Talos API of a machine that never boots: no maintenance API, no installed OS."""

    async def secure_version(self, ip: str) -> None:
        return None

    async def maintenance_ready(self, ip: str) -> bool:
        return False


@dataclass
class _Run:
    ctx: RunContext
    node: Node

    @property
    def store(self) -> StateStore:
        return self.ctx.store

    @property
    def events(self) -> EventLog:
        return self.ctx.events


def _run(site: Site) -> _Run:
    ctx = RunContext.for_site(site, Progress(None, "lines"), poll=0.2, talos=_NothingAnswers())  # type: ignore[arg-type]
    ctx.progress.events = ctx.events
    ctx.bmc = BMCGate(site, 4, 4)
    return _Run(ctx, site.node("silent"))


def _ipmitool(fleet: BmcFleet, *args: str) -> str:
    ep = fleet.endpoints["silent"]
    return ipmitool(ep.address, ep.port, "admin", PASSWORD, *args)


def test_silent_node_is_power_cycled_then_failed_with_reason(tmp_path: Path, fleet: BmcFleet) -> None:
    site = _site(tmp_path, fleet, boot_timeout=1.5, retries=2)
    run = _run(site)
    with pytest.raises(nodeflow.NodeFailed, match=r"did not boot within 2s after 2 power cycle\(s\)"):
        asyncio.run(nodeflow.drive(run.ctx, run.node))
    record = run.store.node("silent")
    assert record.phase is Phase.POWERED_ON and record.attempts == 2
    steps = [e.data["phase"] for e in run.events.iter() if e.kind == "node.step"]
    assert steps[:3] == ["powered-off", "pxe-set", "powered-on"]
    assert steps.count("power-cycle") == 2
    # The BMC really holds the state the flow left (its one-time PXE was used up by the boot).
    assert "Chassis Power is on" in _ipmitool(fleet, "chassis", "power", "status")


def test_config_fetched_while_tool_was_down_is_recovered_without_bmc(tmp_path: Path, fleet: BmcFleet) -> None:
    site = _site(tmp_path, fleet, boot_timeout=30, retries=0)
    run = _run(site)
    run.store.update("silent", phase=Phase.POWERED_ON, last_event=run.events.last_id())
    run.events.append(
        CONFIG_FETCH, node="silent", ip="10.99.0.11", uuid=UUID
    )  # the node fetched, we were dead
    before = fleet.stats()
    rec = asyncio.run(nodeflow.wait_for_boot(run.ctx, run.node, run.store.node("silent")))
    assert rec.phase is Phase.CONFIG_DELIVERED
    assert fleet.stats() == before, "recovering from the event log must not touch the BMC"


def test_fetch_before_this_power_on_does_not_count(tmp_path: Path, fleet: BmcFleet) -> None:
    site = _site(tmp_path, fleet, boot_timeout=1.0, retries=0)
    run = _run(site)
    run.events.append(CONFIG_FETCH, node="silent", ip="10.99.0.11", uuid=UUID)  # an old boot's fetch
    run.store.update("silent", phase=Phase.POWERED_ON, last_event=run.events.last_id())
    with pytest.raises(nodeflow.NodeFailed, match="did not boot"):
        asyncio.run(nodeflow.wait_for_boot(run.ctx, run.node, run.store.node("silent")))
