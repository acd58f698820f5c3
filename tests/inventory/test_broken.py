"""Every broken inventory under tests/data/broken is refused with exit 2 and a message
that names the file, the line and the field path, and says what is wrong.

The expectations live beside the data in ``expect.yaml``; the lines they name are marked
``# <--`` in the data files so a reader can check them by eye.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.cli import main
from provisioner.inventory import InventoryError, load_inventory

BROKEN = Path(__file__).resolve().parent.parent / "data" / "broken"
EXPECT: dict[str, dict[str, Any]] = yaml.safe_load((BROKEN / "expect.yaml").read_text())


def _expected_text(case: dict[str, Any]) -> str:
    where = f"{case['file']}:{case['line']}:"
    return f"{where} {case['path']}: " if case["path"] else f"{where} "


def test_every_broken_inventory_has_an_expectation() -> None:
    on_disk = {p.name for p in BROKEN.iterdir() if p.name != "expect.yaml"}
    assert on_disk == set(EXPECT)
    assert len(EXPECT) >= 20
    assert len({c["rule"] for c in EXPECT.values()}) == len(EXPECT), "each case must exercise its own rule"


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_validate_refuses_with_location(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    case = EXPECT[name]
    monkeypatch.chdir(BROKEN)  # file names in messages are relative to the working directory
    assert main(["--inventory", name, "validate"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = [line.strip() for line in captured.err.splitlines()[1:]]
    assert captured.err.startswith("error: inventory is invalid")
    first = problems[0]
    assert first.startswith(_expected_text(case)), first
    assert case["message"] in first
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_problem_fields(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = EXPECT[name]
    monkeypatch.chdir(BROKEN)
    with pytest.raises(InventoryError) as info:
        load_inventory(name)
    assert len(info.value.problems) == 1, "each case breaks exactly one rule"
    first = info.value.problems[0]
    assert (first.file, first.line, first.path) == (case["file"], case["line"], case["path"])
    assert case["message"] in first.message
    assert all(p.file and (p.path or p.message) for p in info.value.problems)


def test_json_output_lists_problems(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(BROKEN)
    assert main(["--inventory", "duplicate_ip.yaml", "--output", "json", "validate"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False
    case = EXPECT["duplicate_ip.yaml"]
    assert {k: data["problems"][0][k] for k in ("file", "line", "path")} == {
        k: case[k] for k in ("file", "line", "path")
    }


def test_console_script_in_a_subprocess(tmp_path: Path) -> None:
    """The installed ``provisioner`` command, in a real process, in another directory."""
    exe = Path(sys.executable).with_name("provisioner")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "provisioner.cli"]
    work = tmp_path / "site"
    shutil.copytree(BROKEN / "dir_duplicate_ip", work / "dir_duplicate_ip")
    env = {k: v for k, v in os.environ.items() if k != "PROVISIONER_INVENTORY"}
    proc = subprocess.run(
        [*cmd, "--inventory", "dir_duplicate_ip", "validate"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    case = EXPECT["dir_duplicate_ip"]
    assert _expected_text(case) + case["message"] in proc.stderr
    assert "Traceback" not in proc.stderr

    for name in ("literal_password.yaml", "yaml_syntax.yaml"):
        proc = subprocess.run(
            [*cmd, "--inventory", str(BROKEN / name), "validate"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert proc.returncode == 2
        assert EXPECT[name]["message"] in proc.stderr
    assert "hunter2" not in proc.stderr, "a literal password must never be echoed back"
