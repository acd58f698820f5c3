"""`provisioner up` reports per node and exits 1 when any node or the cluster failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.cli import main
from provisioner.pipeline import up as runmod

REPO = Path(__file__).resolve().parents[2]


def _result(ok: bool) -> runmod.UpResult:
    nodes = [
        runmod.NodeOutcome("cp1", "lab", "ready", True, None, 42.0),
        runmod.NodeOutcome("w1", "lab", "powered-on", ok, None if ok else "did not boot within 600s", 600.0),
    ]
    return runmod.UpResult(nodes=nodes, cluster="formed", kubeconfig="state/lab/kubeconfig", seconds=650.0)


@pytest.mark.parametrize("ok,code", [(True, 0), (False, 1)])
def test_exit_code_and_summary(
    ok: bool, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, object] = {}

    def fake_up(site, nodes, **kwargs):  # type: ignore[no-untyped-def]
        seen["nodes"] = [n.name for n in nodes]
        return _result(ok)

    monkeypatch.setattr(runmod, "up", fake_up)
    inventory = str(REPO / "inventory/examples/lab.yaml")
    assert main(["-i", inventory, "--node", "w1", "--node", "cp1", "-o", "json", "up"]) == code
    assert seen["nodes"] == ["cp1", "w1"]  # inventory order, the selection applied
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is ok
    failed = [n for n in out["nodes"] if not n["ok"]]
    assert [(n["name"], n["error"]) for n in failed] == ([] if ok else [("w1", "did not boot within 600s")])


def test_text_summary_names_failed_nodes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runmod, "up", lambda site, nodes, **kw: _result(False))
    assert main(["-i", str(REPO / "inventory/examples/lab.yaml"), "up"]) == 1
    out = capsys.readouterr().out
    assert "w1" in out and "FAILED: did not boot within 600s" in out and "cluster: formed" in out
