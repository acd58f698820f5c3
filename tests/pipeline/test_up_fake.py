"""``up``'s node flow and cluster formation against fake machines, BMCs and Talos API.

Injected through the run context (no root, VMs or network); the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provisioner.events import EventLog
from provisioner.inventory.model import Site
from provisioner.layout import StateLayout
from provisioner.pipeline import up as up_module
from provisioner.pipeline.context import RunContext
from provisioner.pipeline.stages import HARDWARE_STAGES
from provisioner.pipeline.up import UpResult, up
from provisioner.state import Phase, StateStore
from provisioner.workflow.clusterflow import ClusterState
from provisioner.workflow.progress import Progress
from provisioner.workflow.reset import reset_nodes

from .conftest import make_site
from .fakes import Crash, FakeTalos, World


def _world(site: Site) -> World:
    return World(site.nodes, StateLayout(site.state_dir).events)


def _up(site: Site, world: World, talos: FakeTalos | None = None, rack: str | None = None) -> UpResult:
    return up(
        site,
        [n for n in site.nodes if rack is None or n.rack == rack],
        progress_mode="lines",
        poll=0.02,
        talos=talos or FakeTalos(world),
        bmc_connect=world.controller,
        netboot=None,
        stages=HARDWARE_STAGES,  # the platform stages need a Kubernetes API (tests/platform)
    )


def test_fresh_site_forms_once_and_a_rerun_touches_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    result = _up(site, world)
    assert result.ok, result.as_dict()
    assert [(n.name, n.phase) for n in result.nodes] == [(n, "ready") for n in ("cp1", "cp2", "cp3", "w1")]
    assert result.cluster == "formed" and world.calls["bootstrap"] == 1
    assert sorted(world.etcd) == ["cp1", "cp2", "cp3"]
    layout = StateLayout(site.state_dir)
    assert stat.S_IMODE(os.stat(layout.kubeconfig).st_mode) == 0o600
    assert ClusterState.load(layout.cluster_record).formed
    # The one set of stage names, in order, in the result and in the event log.
    assert list(result.stages) == ["secrets", "machine-configs", "netboot", "nodes", "cluster"]
    logged = [e.data["stage"] for e in EventLog(layout.events).iter() if e.kind == "pipeline.stage"]
    assert logged[0] == "secrets" and logged[-1] == "cluster"
    assert world.machines["cp1"].log == ["power off", "boot pxe", "power on", "boot disk persistent"]

    secrets = layout.secrets.read_bytes()
    before = {name: list(m.log) for name, m in world.machines.items()}
    again = _up(site, world)
    assert again.ok and again.cluster == "formed"
    assert {name: m.log for name, m in world.machines.items()} == before, "a rerun sends no BMC command"
    assert world.calls["bootstrap"] == 1 and layout.secrets.read_bytes() == secrets
    assert again.stages["cluster"] == "done" and again.stages["secrets"] == "done"


def test_crash_between_bootstrap_and_cluster_record_never_bootstraps_twice(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    with pytest.raises(Crash):
        _up(site, world, FakeTalos(world, crash_after_bootstrap=True))
    layout = StateLayout(site.state_dir)
    assert world.calls["bootstrap"] == 1
    assert not ClusterState.load(layout.cluster_record).bootstrapped  # the crash came before the record
    result = _up(site, world)
    assert result.ok and result.cluster == "formed", result.as_dict()
    assert world.calls["bootstrap"] == 1, "the rerun must find etcd's members and not bootstrap again"
    assert ClusterState.load(layout.cluster_record).bootstrap_node is None  # found, not made, by this run


def test_node_already_installed_at_start_is_not_network_booted(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    world.install_now("cp2")  # installed earlier (its record lost): answers over mutual TLS
    result = _up(site, world)
    assert result.ok, result.as_dict()
    assert world.machines["cp2"].log == ["boot disk persistent"], "no power change, no PXE: no reinstall"
    steps = [e.data["detail"] for e in EventLog(StateLayout(site.state_dir).events).iter() if e.node == "cp2"]
    assert any("already installed" in s for s in steps)


def test_silent_node_is_power_cycled_then_failed_and_the_rest_form(tmp_path: Path) -> None:
    site = make_site(tmp_path, boot=0.3, retries=2)
    world = _world(site)
    world.machines["w1"].silent = True
    result = _up(site, world)
    assert not result.ok and result.cluster == "formed"
    failed = {n.name: n.error for n in result.nodes if not n.ok}
    assert list(failed) == ["w1"]
    assert "did not boot within 0s after 2 power cycle(s)" in (failed["w1"] or "")
    log = world.machines["w1"].log
    assert log[:3] == ["power off", "boot pxe", "power on"]
    assert log.count("boot pxe") == 3  # once, then before each of the two power cycles
    record = StateStore(site.state_dir).node("w1")
    assert record.phase is Phase.POWERED_ON and record.attempts == 2 and record.error


def test_dead_bmc_fails_exactly_that_node_with_its_reason(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    world.machines["w1"].dead_bmc = True
    result = _up(site, world)
    assert result.cluster == "formed" and not result.ok
    outcome = {n.name: n for n in result.nodes}
    assert [n for n, o in outcome.items() if not o.ok] == ["w1"]
    assert "BMC power off failed" in (outcome["w1"].error or "")
    assert "no route to host" in (outcome["w1"].error or "") and "fake-password" not in str(result.as_dict())
    assert outcome["w1"].phase == "blank"


def test_dead_control_plane_bmc_fails_the_cluster_and_stops_the_pipeline(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    world.machines["cp3"].dead_bmc = True
    result = _up(site, world)
    assert result.cluster == "failed" and "cp3" in (result.cluster_error or "")
    assert result.stages["cluster"] == "failed" and world.calls["bootstrap"] == 0


def test_reset_of_every_control_plane_makes_the_next_up_bootstrap_again(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    assert _up(site, world).ok
    cps = site.controlplanes

    async def wipe() -> list[str]:
        ctx = RunContext.for_site(site, Progress(None, "lines"), talos=FakeTalos(world))
        return (await reset_nodes(ctx, cps)).wiped

    layout = StateLayout(site.state_dir)
    layout.platform_dir.mkdir()
    layout.platform_stage("helmreleases").write_text('{"done": true}\n')  # the old cluster's platform
    assert asyncio.run(wipe()) == ["cp1", "cp2", "cp3"]
    assert world.calls["reset"] == 3 and world.calls["reset-graceful"] == 0  # no etcd left to leave
    record = json.loads(layout.cluster_record.read_text())
    assert record["formed"] is False and record["bootstrapped"] is False
    # etcd is gone, and the platform with it: its records move aside, so the next `up` installs it
    assert not layout.platform_dir.exists()
    (retired,) = layout.root.glob("platform.retired-*")
    assert (retired / "helmreleases.json").read_text() == '{"done": true}\n'
    for cp in cps:  # the machines rebooted into the network boot
        world.machines[cp.name].power = world.machines[cp.name].power.OFF
    result = _up(site, world)
    assert result.ok and result.cluster == "formed", result.as_dict()
    assert world.calls["bootstrap"] == 2


def test_reset_returns_only_once_the_node_stopped_answering(tmp_path: Path) -> None:
    """A node wipes itself after accepting Reset; until then it still answers over mutual TLS, and
    an `up` started at once took it for installed (lab e2e). A node that never goes is named."""
    site = make_site(tmp_path, boot=3.0)
    world = _world(site)
    assert _up(site, world).ok
    world.machines["w1"].reset_lag = 1.0
    world.machines["cp2"].reset_lag = 1e9  # accepts the Reset, never goes down

    async def wipe() -> tuple[list[str], dict[str, str], float]:
        ctx = RunContext.for_site(site, Progress(None, "lines"), talos=FakeTalos(world))
        started = time.monotonic()
        result = await reset_nodes(ctx, [site.node("w1"), site.node("cp2")])
        return result.wiped, result.failed, time.monotonic() - started

    wiped, failed, took = asyncio.run(wipe())
    assert wiped == ["w1", "cp2"] and not world.machines["w1"].answers_mtls
    assert list(failed) == ["cp2"] and "still answers over mutual TLS after 3 s" in failed["cp2"]
    assert took >= 3.0


def test_reset_of_one_control_plane_is_graceful_and_unforms_the_record(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    assert _up(site, world).ok

    async def wipe() -> None:
        ctx = RunContext.for_site(site, Progress(None, "lines"), talos=FakeTalos(world))
        await reset_nodes(ctx, [site.node("cp2")])

    asyncio.run(wipe())
    assert world.calls["reset-graceful"] == 1
    record = ClusterState.load(StateLayout(site.state_dir).cluster_record)
    assert not record.formed and record.bootstrapped  # etcd lives on in cp1 and cp3
    assert StateStore(site.state_dir).node("cp2").phase is Phase.BLANK


def test_reset_names_a_stale_etcd_member_with_the_command_to_remove_it(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    assert _up(site, world).ok

    class Forgetful(FakeTalos):
        async def reset(self, ip: str, graceful: bool) -> None:  # wipes, but leaves etcd as it was
            self.world.calls["reset-graceful" if graceful else "reset"] += 1
            self._machine(ip).installed_at = None

    async def wipe() -> dict[str, str]:
        ctx = RunContext.for_site(site, Progress(None, "lines"), talos=Forgetful(world))
        return (await reset_nodes(ctx, [site.node("cp3")])).stale

    stale = asyncio.run(wipe())
    assert list(stale) == ["cp3"] and stale["cp3"].startswith("talosctl -n 10.98.0.11 etcd remove-member ")


def _hold_rack(site: Site, rack: str) -> subprocess.Popen[str]:
    """Another run's rack lock: a separate process holding it until its stdin closes."""
    code = (
        "import sys\nfrom pathlib import Path\nfrom provisioner.layout import StateLayout\n"
        "from provisioner.workflow.locks import hold_racks\n"
        f"with hold_racks(StateLayout(Path({str(site.state_dir)!r})), [{rack!r}]):\n"
        "    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_rack_run_waits_for_control_planes_another_live_run_is_installing(tmp_path: Path) -> None:
    """``make rack-r1 & make rack-r2``: r2's run (cp3, w1) needs r1's control planes, which r1's
    run (here: a process holding r1's lock, and a thread standing in for its node flow) installs
    later; r2's run waits for them and forms the cluster, instead of halting."""
    site = make_site(tmp_path)
    world = _world(site)
    store = StateStore(site.state_dir)
    other_run = _hold_rack(site, "r1")

    def r1_installs() -> None:
        time.sleep(1.0)
        for name in ("cp1", "cp2"):
            world.install_now(name)
            store.update(name, phase=Phase.INSTALLED, installed=True)

    worker = threading.Thread(target=r1_installs)
    worker.start()
    try:
        result = _up(site, world, rack="r2")
    finally:
        worker.join()
        other_run.communicate("")
    assert result.ok and result.cluster == "formed", result.as_dict()
    assert world.calls["bootstrap"] == 1 and sorted(world.etcd) == ["cp1", "cp2", "cp3"]
    waits = [
        e.data.get("detail", "")
        for e in EventLog(StateLayout(site.state_dir).events).iter()
        if "other runs" in str(e.data.get("detail", ""))
    ]
    assert waits and f"rack r1 (pid {other_run.pid}): cp1, cp2" in waits[0]


def test_a_rack_run_halts_when_nobody_installs_the_other_racks_control_planes(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    world = _world(site)
    result = _up(site, world, rack="r2")
    assert result.cluster == "waiting" and world.calls["bootstrap"] == 0, result.as_dict()
    assert [(n.name, n.phase) for n in result.nodes] == [("cp3", "ready"), ("w1", "ready")]


def test_machines_replaced_outside_the_tool_are_provisioned_again_not_trusted(tmp_path: Path) -> None:
    """``lab down`` (or a swapped server) leaves records saying "ready" and "formed" for machines
    that are now blank: ``forget_nodes`` starts their records blank, and the next ``up``
    installs them, bootstraps a new etcd and retires the old cluster's platform records."""
    from provisioner.workflow.reset import forget_nodes

    site = make_site(tmp_path)
    assert _up(site, _world(site)).ok
    layout = StateLayout(site.state_dir)
    layout.platform_dir.mkdir()
    layout.platform_stage("tenants").write_text("{}\n")
    secrets = layout.secrets.read_bytes()
    assert forget_nodes(site, [n.name for n in site.nodes], "test: new machines") == [
        "cp1",
        "cp2",
        "cp3",
        "w1",
    ]
    assert forget_nodes(site, ["cp1"], "again") == ["cp1"]  # idempotent for the caller: blank stays blank
    store = StateStore(site.state_dir)
    assert {store.node(n.name).phase for n in site.nodes} == {Phase.BLANK}
    record = ClusterState.load(layout.cluster_record)
    assert (record.formed, record.bootstrapped) == (False, False)
    assert not layout.platform_dir.exists() and layout.secrets.read_bytes() == secrets
    fresh = _world(site)  # the new, blank machines
    result = _up(site, fresh)
    assert result.ok and result.cluster == "formed", result.as_dict()
    assert fresh.calls["bootstrap"] == 1 and sorted(fresh.etcd) == ["cp1", "cp2", "cp3"]
    assert all("pxe" in " ".join(fresh.machines[n.name].log) for n in site.nodes)  # each installed anew


def test_up_sizes_its_bmc_workers_by_the_nodes_not_yet_ready(tmp_path: Path) -> None:
    """With no ``bmc_processes`` given, `up` asks ``bmcgate.default_processes`` for the nodes with
    a BMC that are not ready yet: all of them on a fresh site, none on a rerun of a built one."""
    site = make_site(tmp_path)
    assert all(n.bmc is not None for n in site.nodes)
    store = StateStore(site.state_dir)  # one store, as `up` shares it with its record check
    assert up_module._bmc_fan_out(store, site.nodes) == len(site.nodes) == 4
    assert up_module._bmc_fan_out(store, site.nodes[:2]) == 2  # the run's selection only
    assert _up(site, _world(site)).ok
    assert up_module._bmc_fan_out(store, site.nodes) == 0  # records written since: read again
    StateStore(site.state_dir).update("w1", phase=Phase.INSTALLED)  # one node back before ready
    assert up_module._bmc_fan_out(store, site.nodes) == 1
