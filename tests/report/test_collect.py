"""What a node cell says: its state from the record, and its last event in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provisioner.events import Event
from provisioner.layout import StateLayout
from provisioner.report import synthetic
from provisioner.report.collect import collect, describe, rack_problem


@pytest.mark.parametrize(
    ("kind", "outcome", "data", "line"),
    [
        ("node.step", "ok", {"phase": "ready", "detail": "boots from disk"}, "ready · boots from disk"),
        (
            "node.step",
            "error",
            {"phase": "powered-on", "detail": "did not boot"},
            "error: powered-on · did not boot",
        ),
        (
            "config.fetch",
            "ok",
            {"bytes": 24000, "ip": "10.0.0.5"},
            "config.fetch",
        ),  # sizes and addresses left out
        ("config.denied", "denied", {"reason": "installed"}, "config.denied [denied]: installed"),
        ("ipxe.script", "install", {"mac": "52:54:00:00:00:01"}, "ipxe.script [install]"),
    ],
)
def test_describe(kind: str, outcome: str, data: dict[str, Any], line: str) -> None:
    assert describe(Event(1, 0.0, kind, "n1", outcome, data)) == line


def test_states_follow_the_records(tmp_path: Path) -> None:
    view = synthetic.site(6, 1)
    layout = StateLayout(tmp_path / "state")
    names = [n.name for n in view.nodes]
    synthetic.write_state(layout, view, synthetic.Scenario(failed={names[4]}))
    layout.node_record(names[5]).unlink()  # never touched: blank
    layout.node_record(names[3]).write_text(json.dumps({"name": names[3], "phase": "config-delivered"}))
    layout.node_record(names[2]).write_text(json.dumps({"name": names[2], "phase": "pxe-set"}))
    data = collect(view, layout)
    assert [n.state for n in data.nodes] == ["ready", "ready", "booting", "installing", "failed", "blank"]
    failed = data.nodes[4]
    assert failed.error == synthetic.BOOT_FAILURE and failed.attempts == 2
    assert failed.last is not None and failed.last.outcome == "error"
    assert data.count("ready") == 2
    assert data.cluster["formed"] is True


def test_a_rack_is_stuck_when_a_node_failed_or_nothing_moved_for_ten_minutes(tmp_path: Path) -> None:
    view = synthetic.site(4, 1)
    layout = StateLayout(tmp_path / "state")
    synthetic.write_state(layout, view)
    names = [n.name for n in view.nodes]
    data = collect(view, layout)
    assert rack_problem(data.nodes, data.generated) is None  # all ready
    layout.node_record(names[1]).write_text(json.dumps({"name": names[1], "phase": "powered-on"}))
    data = collect(view, layout)
    last = max(n.last.time for n in data.nodes if n.last is not None)
    assert rack_problem(data.nodes, last + 60) is None  # booting, and events are recent
    assert rack_problem(data.nodes, last + 3600) == "no progress for 60 min (1 under way)"
    layout.node_record(names[2]).write_text(json.dumps({"name": names[2], "phase": "blank", "error": "BMC"}))
    assert rack_problem(collect(view, layout).nodes, last + 60) == "1 failed"
