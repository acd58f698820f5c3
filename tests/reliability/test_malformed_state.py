"""A state record that cannot be read stops the run with exit 2, naming the file and the
way out; it is never read as "blank" (that would reinstall an installed node)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from provisioner.cli import main
from provisioner.records import MalformedState
from provisioner.state import NodeRecord, Phase, StateStore
from provisioner.workflow.clusterflow import ClusterState

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "examples" / "lab.yaml"

BAD_NODE_RECORDS = {
    "not json": (b'{"phase": "installed", ', "is not valid JSON"),
    "empty": (b"", "is empty"),
    "not utf-8": (b'{"phase": "\xff"}', "is not UTF-8"),
    "a list": (b"[1, 2]", "expected a JSON object, found list"),
    "unknown phase": (b'{"name": "cp1", "phase": "installing"}', "field 'phase' is 'installing', not one of"),
    "no phase": (b'{"name": "cp1", "installed": true}', "field 'phase' is missing"),
    "installed as text": (b'{"phase": "ready", "installed": "yes"}', "field 'installed' must be true/false"),
    "attempts as bool": (b'{"phase": "ready", "attempts": true}', "field 'attempts' must be an integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_NODE_RECORDS))
def test_a_malformed_node_record_is_an_error_never_blank(tmp_path: Path, case: str) -> None:
    content, says = BAD_NODE_RECORDS[case]
    store = StateStore(tmp_path)
    store.save(NodeRecord("cp1", phase=Phase.READY, installed=True))
    path = store.nodes_dir / "cp1.json"
    path.write_bytes(content)
    with pytest.raises(MalformedState) as err:
        store.node("cp1")
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and says in msg
    assert "provisioner status" in msg and "provisioner --node cp1 reset" in msg and f"remove {path}" in msg
    assert err.value.exit_code == 2
    with pytest.raises(MalformedState):
        store.is_installed("cp1")
    with pytest.raises(MalformedState):  # an update never replaces what it could not read
        store.update("cp1", attempts=1)
    assert path.read_bytes() == content


def test_a_good_record_and_a_missing_one_still_read(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.node("w1") == NodeRecord("w1")  # never written: blank is the truth
    store.save(NodeRecord("cp1", phase=Phase.INSTALLED, installed=True, attempts=2, last_event=7))
    rec = store.node("cp1")
    assert (rec.phase, rec.installed, rec.attempts, rec.last_event) == (Phase.INSTALLED, True, 2, 7)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"bootstrapped": tru', "is not valid JSON"),
        (b'{"bootstrapped": "yes"}', "field 'bootstrapped' must be true/false"),
        (b'{"formed": true, "members": [1]}', "field 'members' must be a list of node names"),
        (b"null", "expected a JSON object"),
    ],
)
def test_a_malformed_cluster_record_is_an_error(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(content)
    with pytest.raises(MalformedState) as err:
        ClusterState.load(path)
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value)
    assert f"remove {path}" in str(err.value) and "asks the control planes for etcd members" in str(err.value)
    ok = tmp_path / "ok.json"
    ok.write_text(
        json.dumps({"bootstrapped": True, "bootstrap_node": "cp1", "formed": False, "members": None})
    )
    assert ClusterState.load(ok).bootstrapped is True
    assert ClusterState.load(tmp_path / "absent.json") == ClusterState()


def _inventory(tmp_path: Path) -> tuple[Path, Path]:
    data = yaml.safe_load(LAB.read_text())
    state = tmp_path / "state"
    data["cluster"]["state_dir"] = str(state)
    inv = tmp_path / "site.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    return inv, state


def test_up_with_a_malformed_cluster_json_exits_2_before_touching_anything(tmp_path: Path, capsys) -> None:
    inv, state = _inventory(tmp_path)
    state.mkdir(mode=0o700)
    (state / "cluster.json").write_text('{"bootstrapped": true, "formed": ')
    assert main(["-i", str(inv), "up"]) == 2
    err = capsys.readouterr().err
    assert f"error: {state / 'cluster.json'}: is not valid JSON" in err
    assert "Traceback" not in err and "internal error" not in err
    assert sorted(p.name for p in state.iterdir()) == ["cluster.json"]  # no secrets, configs or events
    assert main(["-i", str(inv), "status"]) == 2
    assert f"{state / 'cluster.json'}: is not valid JSON" in capsys.readouterr().err


def test_up_with_a_malformed_node_record_exits_2_and_status_shows_it(tmp_path: Path, capsys) -> None:
    inv, state = _inventory(tmp_path)
    store = StateStore(state)
    store.save(NodeRecord("cp2", phase=Phase.READY, installed=True))
    (store.nodes_dir / "cp2.json").write_text("{garbage")
    assert main(["-i", str(inv), "up"]) == 2
    err = capsys.readouterr().err
    assert str(store.nodes_dir / "cp2.json") in err and "provisioner --node cp2 reset" in err
    assert not (state / "secrets.yaml").exists()

    assert main(["-i", str(inv), "-o", "json", "status"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["nodes"]}
    assert rows["cp2"]["phase"] == "unreadable" and rows["cp2"]["installed"] is None
    assert "is not valid JSON" in rows["cp2"]["error"]
    assert rows["cp1"]["phase"] == "blank"
