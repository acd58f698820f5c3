"""A site whose state an older version kept relative to the working directory is never
started over: no new secrets (a new CA would reinstall every node), both places named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.cli import main
from provisioner.inventory import load_inventory
from provisioner.statedir import unanchored_state_dir

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "examples" / "lab.yaml"


@pytest.fixture
def site_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(inventory file in tmp/inv/, the working directory tmp/work)."""
    (tmp_path / "inv").mkdir()
    (tmp_path / "work").mkdir()
    inv = tmp_path / "inv" / "site.yaml"
    data = yaml.safe_load(LAB.read_text())
    del data["cluster"]["state_dir"]  # the default, state/<cluster>, is what older versions took from the cwd
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    return inv, tmp_path / "work"


def _legacy_secrets(work: Path) -> Path:
    legacy = work / "state" / "lab"
    legacy.mkdir(parents=True)
    (legacy / "secrets.yaml").write_text("cluster: {id: old}\n")
    return legacy


@pytest.mark.parametrize("command", [["secrets", "generate"], ["configs", "generate"]])
def test_no_new_secrets_when_an_older_run_left_them_in_the_working_directory(
    site_dirs, monkeypatch, capsys, command: list[str]
) -> None:
    inv, work = site_dirs
    legacy = _legacy_secrets(work)
    monkeypatch.chdir(work)
    assert main(["-i", str(inv), *command]) == 2
    err = capsys.readouterr().err
    anchored = inv.parent / "state" / "lab"
    assert str(anchored) in err and str(legacy) in err and "reinstalled" in err and "Traceback" not in err
    assert not anchored.exists()  # nothing was created
    assert (legacy / "secrets.yaml").read_text() == "cluster: {id: old}\n"


def test_once_moved_the_site_runs_from_anywhere(site_dirs, monkeypatch, capsys) -> None:
    inv, work = site_dirs
    monkeypatch.chdir(work)
    assert main(["-i", str(inv), "secrets", "generate"]) == 0  # no legacy state: a new site
    anchored = inv.parent / "state" / "lab"
    before = (anchored / "secrets.yaml").read_bytes()
    capsys.readouterr()
    _legacy_secrets(work)  # an unrelated stray directory does not matter once secrets exist
    monkeypatch.chdir("/")
    assert main(["-i", str(inv), "secrets", "generate"]) == 0
    assert (anchored / "secrets.yaml").read_bytes() == before


def test_only_relative_state_dirs_in_another_place_count(site_dirs, tmp_path: Path) -> None:
    inv, work = site_dirs
    _legacy_secrets(work)
    site = load_inventory(inv).site
    assert unanchored_state_dir(site, work) == work / "state" / "lab"
    assert unanchored_state_dir(site, inv.parent) is None  # run from the inventory's directory: same place
    data = yaml.safe_load(inv.read_text())
    data["cluster"]["state_dir"] = str(tmp_path / "abs")
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    assert unanchored_state_dir(load_inventory(inv).site, work) is None  # absolute: never ambiguous
