"""`provisioner up` end to end against the virtual lab (issue 7's acceptance).

3 control planes + 1 worker (IPMI and Redfish BMCs) go from powered off to a 3-member
etcd and a kubeconfig. The first run is killed with SIGKILL once some nodes fetched their
configs; the rerun must finish without reinstalling anything, with the secrets untouched.
A second lab runs with BMC fault injection on.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.lab.rehearsal import LabRun

from .conftest import TIMINGS

pytestmark = [pytest.mark.lab, pytest.mark.e2e]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    if os.geteuid() != 0:
        pytest.fail("the lab end-to-end tests need root (namespaces, taps, QEMU)")
    run = LabRun.create(tmp_path_factory.mktemp("e2e"))
    try:
        yield run
    finally:
        run.down()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_up_killed_midway_then_resumed_forms_the_cluster(lab: LabRun) -> None:
    proc = lab.start_up()
    secrets = lab.state / "secrets.yaml"
    fetched = lab.wait_events(
        lambda evs: sum(1 for e in evs if e.kind == "config.fetch" and e.outcome == "ok") >= 2, timeout=600
    )
    assert fetched, f"no node fetched its config in time; see {lab.workdir / 'up.log'}"
    before = _sha(secrets)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the tool (and its netboot children)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    rc, result = lab.up()
    assert rc == 0, f"rerun failed: {json.dumps(result, indent=1)}; see {lab.workdir / 'up.log'}"
    assert result["cluster"] == "formed"
    assert {n["name"]: n["phase"] for n in result["nodes"]} == dict.fromkeys(
        ["cp1", "cp2", "cp3", "w1"], "ready"
    )
    assert _sha(secrets) == before, "the secrets bundle changed across the crash"

    kubeconfig = Path(result["kubeconfig"])
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert "certificate-authority-data" in kubeconfig.read_text()
    cluster = json.loads((lab.state / "cluster.json").read_text())
    assert cluster["formed"] and sorted(cluster["members"]) == ["cp1", "cp2", "cp3"]

    # No node was installed twice: one config fetch each, and no install script served
    # to a node after it was recorded installed.
    events = lab.events.read()
    for node in ("cp1", "cp2", "cp3", "w1"):
        fetches = [e for e in events if e.kind == "config.fetch" and e.node == node and e.outcome == "ok"]
        assert len(fetches) == 1, f"{node} fetched its config {len(fetches)} times"
        installed = [
            e.id
            for e in events
            if e.kind == "node.step" and e.node == node and e.data.get("phase") == "installed"
        ]
        assert len(installed) == 1
        late = [e for e in events if e.kind == "ipxe.script" and e.node == node and e.id > installed[0]]
        assert all(e.outcome != "install" for e in late), f"{node} was offered the installer after install"
    TIMINGS.update(lab.node_timings())


def test_etcd_has_three_voting_members_over_the_talos_api(lab: LabRun) -> None:
    code = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from provisioner.workflow import talos_ops\n"
        "ms = asyncio.run(talos_ops.etcd_members(sys.argv[1], Path(sys.argv[2])))\n"
        "print(json.dumps([[m.hostname, m.is_learner] for m in ms]))\n"
    )
    import subprocess
    import sys

    from provisioner.lab import netns

    res = subprocess.run(
        netns.exec_argv(
            lab.namespace, [sys.executable, "-c", code, "192.168.77.12", str(lab.state / "talosconfig")]
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert sorted(map(tuple, json.loads(res.stdout))) == [("cp1", False), ("cp2", False), ("cp3", False)]


def test_rerun_after_success_changes_nothing(lab: LabRun) -> None:
    records = {p.name: p.read_bytes() for p in (lab.state / "nodes").glob("*.json")}
    configs = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (lab.state / "configs").glob("*.yaml")}
    last = lab.events.last_id()
    rc, result = lab.up(timeout=300)
    assert rc == 0 and result["cluster"] == "formed"
    assert {p.name: p.read_bytes() for p in (lab.state / "nodes").glob("*.json")} == records
    assert {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (lab.state / "configs").glob("*.yaml")
    } == configs
    new = lab.events.read(since=last)
    # Run-level records only (the stage walk and the cluster step); nothing about a node.
    run_level = ("cluster.step", "pipeline.stage")
    assert [e.kind for e in new if e.kind not in run_level] == [], "a rerun touched nodes"
    assert all(e.node is None for e in new), "a rerun recorded a node event"


def test_status_shows_every_node_ready(lab: LabRun) -> None:
    res = lab.tool("--output", "json", "status")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["formed"] is True
    assert {r["name"]: (r["phase"], r["installed"], r["error"]) for r in data["nodes"]} == {
        n: ("ready", True, None) for n in ("cp1", "cp2", "cp3", "w1")
    }


def test_reset_wipes_a_node_and_up_reinstalls_it(lab: LabRun) -> None:
    res = lab.tool("--node", "w1", "reset", "--yes")
    assert res.returncode == 0, res.stderr
    record = json.loads((lab.state / "nodes" / "w1.json").read_text())
    assert record["phase"] == "blank" and record["installed"] is False
    last = lab.events.last_id()
    rc, result = lab.up()
    assert rc == 0, json.dumps(result, indent=1)
    fetched = [e for e in lab.events.read(since=last) if e.kind == "config.fetch" and e.node == "w1"]
    assert [e.outcome for e in fetched] == ["ok"], (
        "the wiped node did not network-boot and fetch its config again"
    )


def test_up_with_bmc_fault_injection_forms_cluster_or_names_failures(
    lab: LabRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lab.down()  # one lab at a time: the CPU is the limit under TCG
    faulty = LabRun.create(
        tmp_path_factory.mktemp("faults"),
        cluster="e2efaults",
        bmc_faults={"error_rate": 0.10, "noop_rate": 0.05, "timeout_rate": 0.02, "seed": 11},
    )
    try:
        rc, result = faulty.up()
    finally:
        faulty.down()
    assert result, f"no result printed; see {faulty.workdir / 'up.log'}"
    if rc == 0:
        assert result["cluster"] == "formed"
        assert all(n["ok"] for n in result["nodes"])
    else:
        failed = [n for n in result["nodes"] if not n["ok"]]
        assert rc == 1 and (failed or result["cluster"] == "failed")
        for n in failed:
            assert n["error"], f"{n['name']} failed without a reason"
