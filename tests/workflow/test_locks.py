"""Rack and cluster locks: a second run on the same rack is refused, other racks go on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from provisioner.cli import main
from provisioner.layout import StateLayout
from provisioner.workflow.locks import LockBusy, cluster_lock, hold_racks

REPO = Path(__file__).resolve().parents[2]


def _holder(locks: Path, rack: str) -> subprocess.Popen[str]:
    """A separate process holding ``rack``'s lock until its stdin closes."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from provisioner.layout import StateLayout
        from provisioner.workflow.locks import hold_racks
        with hold_racks(StateLayout(Path({str(locks)!r})), [{rack!r}]):
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_same_rack_refused_other_rack_allowed(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "r1")
    try:
        with (
            pytest.raises(
                LockBusy, match=rf"rack r1 is being provisioned by another run \(pid {holder.pid}\)"
            ),
            hold_racks(StateLayout(tmp_path), ["r1"]),
        ):
            pass
        with hold_racks(StateLayout(tmp_path), ["r2"]):  # a different rack runs at the same time
            pass
    finally:
        holder.communicate("")
    with hold_racks(StateLayout(tmp_path), ["r1"]):  # released when the holder exits
        pass


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "r1")
    holder.kill()
    holder.wait()
    with hold_racks(StateLayout(tmp_path), ["r1"]):
        pass


def test_cluster_lock_is_exclusive(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    with cluster_lock(layout), pytest.raises(LockBusy, match="the cluster"), cluster_lock(layout):
        pass


def test_up_on_a_locked_rack_exits_1_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "lab.yaml"
    text = (REPO / "inventory/examples/lab.yaml").read_text()
    inventory.write_text(
        text.replace("  state_dir: ../../state/lab\n", f"  state_dir: {tmp_path / 'state'}\n", 1)
    )
    holder = _holder(tmp_path / "state", "lab")
    try:
        rc = main(["--inventory", str(inventory), "up", "--progress", "lines"])
    finally:
        holder.communicate("")
    assert rc == 1
    assert "rack lab is being provisioned by another run" in capsys.readouterr().err


def test_holder_names_the_live_holder_without_taking_the_lock(tmp_path: Path) -> None:
    from provisioner.workflow.locks import holder

    lock = StateLayout(tmp_path).rack_lock("r1")
    assert holder(lock) is None  # no file yet
    proc = _holder(tmp_path, "r1")
    try:
        for _ in range(3):  # asking never takes it: the holder keeps it, a starter is not turned away
            assert holder(lock) == proc.pid
    finally:
        proc.communicate("")
    assert holder(lock) is None
    assert holder(StateLayout(tmp_path).rack_lock("r2")) is None
