"""One set of stage names: ``plan -o json``, ``status -o json`` and what ``up`` records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.cli import main
from provisioner.events import EventLog
from provisioner.layout import StateLayout
from provisioner.pipeline.stages import HARDWARE_STAGES, stage_names
from provisioner.pipeline.up import up
from provisioner.workflow.progress import PIPELINE_STAGE

from .conftest import make_site
from .fakes import FakeTalos, World


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:  # type: ignore[type-arg]
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_status_and_up_use_the_same_stage_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = make_site(tmp_path)
    inventory = str(tmp_path / "site.yaml")
    planned = _json(capsys, "-i", inventory, "-o", "json", "plan")["stages"]
    assert planned == stage_names(site.cluster.bundle_spec)
    assert planned[:5] == ["secrets", "machine-configs", "netboot", "nodes", "cluster"]
    assert planned[5] == "api-ready"

    before = _json(capsys, "-i", inventory, "-o", "json", "status")["stages"]
    assert [s["name"] for s in before] == planned
    assert {s["status"] for s in before[1:]} == {"pending"}  # secrets: copied in by the fixture

    world = World(site.nodes, StateLayout(site.state_dir).events)
    result = up(
        site,
        list(site.nodes),
        "lines",
        poll=0.02,
        talos=FakeTalos(world),
        bmc_connect=world.controller,
        netboot=None,
        stages=HARDWARE_STAGES,
    )
    assert result.ok
    recorded = [
        e.data["stage"]
        for e in EventLog(StateLayout(site.state_dir).events).iter()
        if e.kind == PIPELINE_STAGE
    ]
    assert list(dict.fromkeys(recorded)) == planned[:5] == list(result.stages)

    after = {s["name"]: s["status"] for s in _json(capsys, "-i", inventory, "-o", "json", "status")["stages"]}
    assert list(after) == planned
    assert after["secrets"] == after["cluster"] == "done" and after["nodes"] == "done"
    assert after["api-ready"] == "pending"
