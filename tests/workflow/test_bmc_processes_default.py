"""How many BMC worker processes `up` runs when the operator does not say (``--bmc-processes``):
one for a fan-out large enough that the protocol libraries' CPU bounds the run, and only where
another core can take it (``bmcgate.default_processes``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from provisioner.cli import main
from provisioner.pipeline import up as runmod
from provisioner.workflow.bmcgate import AUTO_PROCESSES_FROM, default_processes

REPO = Path(__file__).resolve().parents[2]


def test_one_worker_from_the_threshold_on_and_only_with_a_second_core() -> None:
    assert default_processes(AUTO_PROCESSES_FROM - 1, cores=2) == 0
    assert default_processes(AUTO_PROCESSES_FROM, cores=2) == 1
    assert default_processes(10_000, cores=64) == 1
    assert default_processes(10_000, cores=1) == 0  # one core: the worker would only add its cost
    assert default_processes(0, cores=2) == 0


def test_the_cores_counted_are_those_this_process_may_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # A run pinned to one CPU (taskset, a cgroup cpuset) on a large machine gets no worker.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert default_processes(1000) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_processes(1000) == 1


def _cli_up(monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake_up(site, nodes, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return runmod.UpResult(nodes=[], cluster="formed", kubeconfig="", seconds=0.0)

    monkeypatch.setattr(runmod, "up", fake_up)
    assert main(["-i", str(REPO / "inventory/examples/lab.yaml"), "-o", "json", "up", *args]) == 0
    return seen


def test_the_cli_leaves_the_choice_to_up_unless_the_operator_makes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _cli_up(monkeypatch)["bmc_processes"] is None
    assert _cli_up(monkeypatch, "--bmc-processes", "0")["bmc_processes"] == 0
    assert _cli_up(monkeypatch, "--bmc-processes", "3")["bmc_processes"] == 3
