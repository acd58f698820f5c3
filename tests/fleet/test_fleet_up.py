"""50 simulated machines through the real `provisioner up` (``provisioner.lab.fleet``, no VMs).

One run, several checks: every node installed and ready, etcd bootstrapped exactly once, and what
each node was asked within the protocol minimum + 20% (``provisioner.lab.fleet.minimums``).
BMC round trips are held to the per-step minimum (a fresh session per BMC step, which is how `up`
drives BMCs today); the stricter per-node minimum is what ``make bench-scale`` reports against.
Needs root (the fleet runs in its own network namespace).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from provisioner.lab.fleet import minimums
from provisioner.workflow.bmcgate import AUTO_PROCESSES_FROM, default_processes

REPO = Path(__file__).resolve().parents[2]
NODES = 50
WORKER = "[-]m provisioner[.]workflow[.]bmcprocs"  # a BMC worker process's command line


def bmc_workers() -> set[str]:
    """Pids of BMC worker processes now."""
    return set(subprocess.run(["pgrep", "-f", WORKER], capture_output=True, text=True).stdout.split())


pytestmark = pytest.mark.netns


def run_fleet(workdir: Path, nodes: int, *up_args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner.lab.fleet",
            "up",
            "--nodes",
            str(nodes),
            "--json",
            "--workdir",
            str(workdir),
            "--timeout",
            "400",
            *(("--", *up_args) if up_args else ()),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=480,
    )
    assert proc.stdout.strip(), f"no result (exit {proc.returncode}): {proc.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(proc.stdout)
    out["_exit"] = proc.returncode
    out["_uplog"] = (workdir / "up.log").read_text()[-3000:]
    return out


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_fleet(tmp_path_factory.mktemp("fleet"), NODES)


def test_every_node_installed_and_the_cluster_formed(result: dict[str, Any]) -> None:
    assert result["ok"], result["_uplog"]
    assert result["_exit"] == 0
    assert result["installed"] == NODES
    assert result["ready"] == NODES
    assert result["formed_s"] is not None
    assert all(counts.get("talos.Version", 0) >= 1 for counts in result["per_node"].values())


def test_a_small_fan_out_runs_its_bmc_calls_in_up_s_own_threads(result: dict[str, Any]) -> None:
    # Fewer nodes than ``bmcgate.AUTO_PROCESSES_FROM``: no worker process is worth its memory.
    assert NODES < AUTO_PROCESSES_FROM
    assert result["bmc_workers"] == 0


def test_bootstrap_exactly_once(result: dict[str, Any]) -> None:
    assert result["bootstraps"] == ["cp1"]
    assert result["talos_calls"]["Bootstrap"] == 1


def test_http_requests_per_node_within_protocol_minimum(result: dict[str, Any]) -> None:
    bound = minimums.HTTP_PER_NODE * minimums.SLACK
    for node, counts in result["per_node"].items():
        assert minimums.HTTP_PER_NODE <= counts["http"] <= bound, node


def test_talos_api_calls_within_protocol_minimum(result: dict[str, Any]) -> None:
    # Per node on average: a probe whose answer arrives after the client's deadline on a loaded
    # machine is asked again, so one node may see two; the run as a whole must stay within 20%.
    versions = [counts["talos.Version"] for counts in result["per_node"].values()]
    assert min(versions) >= minimums.TALOS_PER_NODE
    assert sum(versions) / len(versions) <= minimums.TALOS_PER_NODE * minimums.SLACK
    cluster = sum(v for k, v in result["talos_calls"].items() if k != "Version")
    assert cluster <= minimums.TALOS_CLUSTER * minimums.SLACK


def test_bmc_round_trips_within_per_node_minimum(result: dict[str, Any]) -> None:
    # `up` keeps one BMC session for off + PXE once + on, and one for the disk step after the install.
    floor = minimums.bmc_per_node()
    assert result["ipmi_nodes"] > 0 and result["redfish_nodes"] > 0
    assert floor.ipmi <= result["bmc_ipmi_per_node"] <= floor.ipmi * minimums.SLACK
    # Redfish: the system's URI comes from the service root and the inventory's system_id, and what
    # the system is, from this run's first read of it: no connection rediscovers it.
    assert floor.redfish <= result["bmc_redfish_per_node"] <= floor.redfish * minimums.SLACK


def test_bmc_worker_processes_drive_the_fleet_with_one_session_per_visit(tmp_path: Path) -> None:
    """`up --bmc-processes 2`: the BMC calls run in worker processes, each node's in one of them,
    which keeps its session from the power-off to the power-on; the run is the same."""
    nodes = 12
    seen: set[str] = set()  # worker pids observed while the run ran
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            seen.update(bmc_workers())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out = run_fleet(tmp_path, nodes, "--bmc-processes", "2")
    finally:
        stop.set()
        watcher.join()
    assert out["ok"] and out["_exit"] == 0, out["_uplog"]
    assert len(seen) == 2, f"expected the run's 2 BMC worker processes, saw {sorted(seen)}"
    assert out["bmc_workers"] == 2  # the fleet's own count: children of `up` running at once
    assert out["installed"] == nodes and out["ready"] == nodes
    assert out["bootstraps"] == ["cp1"]
    floor = minimums.bmc_per_node()
    assert floor.ipmi <= out["bmc_ipmi_per_node"] <= floor.ipmi * minimums.SLACK
    assert floor.redfish <= out["bmc_redfish_per_node"] <= floor.redfish * minimums.SLACK
    assert not bmc_workers(), "BMC worker processes outlived the run"


def test_a_large_fan_out_gets_one_bmc_worker_process_by_default(tmp_path: Path) -> None:
    """`up` with no ``--bmc-processes`` on ``AUTO_PROCESSES_FROM`` nodes, on 2 cores or more, runs
    its BMC calls in one worker process, and the run is the same."""
    out = run_fleet(tmp_path, AUTO_PROCESSES_FROM)
    assert out["ok"] and out["_exit"] == 0, out["_uplog"]
    # 1 on CI's 2 cores; `up` and this test see the same CPU affinity.
    assert out["bmc_workers"] == default_processes(AUTO_PROCESSES_FROM) == (1 if out["cores"] >= 2 else 0)
    assert out["ready"] == AUTO_PROCESSES_FROM and out["bootstraps"] == ["cp1"]
    floor = minimums.bmc_per_node()
    assert floor.ipmi <= out["bmc_ipmi_per_node"] <= floor.ipmi * minimums.SLACK
    assert floor.redfish <= out["bmc_redfish_per_node"] <= floor.redfish * minimums.SLACK
    assert not bmc_workers(), "BMC worker processes outlived the run"
