"""Two racks provisioned at once on the two-segment lab: ``up --rack r1`` and ``up --rack r2``
as two processes, both complete; a second ``up`` on a rack already being provisioned is refused.

Rack r2 is served by its boot server inside ``up`` (pushed over SSH, events streamed live).
Its worker boots BIOS here: the Talos stand-in installs an extlinux (BIOS) disk only, so the
UEFI "installed -> disk" path is not part of this run (``test_two_segment_lab`` covers UEFI up to
the config fetch). Marked ``lab``: minutes of TCG CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.inventory import load_inventory
from provisioner.inventory.model import Site
from provisioner.lab import lab as labmod
from provisioner.lab import netns

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory/examples/lab-racks.yaml"
LAB_DIR = REPO / ".lab-racks-test" / "par"
CLUSTER = "lrpar"
NS = netns.namespace_name(CLUSTER)
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Site, Path]]:
    if os.geteuid() != 0:
        pytest.fail("the two-segment lab needs root")
    labmod.down_namespace(NS, labmod.LabPaths(LAB_DIR))
    inv_dir = LAB_DIR / "inv"
    inv_dir.mkdir(parents=True, exist_ok=True)
    text = (
        EXAMPLE.read_text()
        .replace("../../.lab-racks/", "../")
        .replace("name: labracks", f"name: {CLUSTER}")
        .replace("mode: uefi", "mode: bios")
    )
    inventory = inv_dir / "lab-racks.yaml"
    inventory.write_text(text)
    site = load_inventory(inventory).site
    labmod.up(site, LAB_DIR)
    try:
        yield site, inventory
    finally:
        labmod.down(site, LAB_DIR)
        assert not [ns for ns in netns.namespaces() if ns == NS or ns.startswith(NS + ".")]


def _up(inventory: Path, rack: str, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        netns.exec_argv(NS, [str(VENV_BIN / "provisioner"), "-i", str(inventory), "--rack", rack, "up"]),
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    out.close()
    return proc


def _events(site: Site) -> list[dict[str, Any]]:
    path = site.state_dir / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_two_racks_in_parallel_both_complete_and_a_second_run_on_a_rack_is_refused(
    lab: tuple[Site, Path],
) -> None:
    site, inventory = lab
    for _attempt in range(5):  # every BMC answers (the emulators' first-session quirk)
        res = subprocess.run(
            netns.exec_argv(NS, [str(VENV_BIN / "provisioner"), "-i", str(inventory), "power", "status"]),
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if res.returncode == 0:
            break
        time.sleep(5)
    logs = {r: LAB_DIR / f"up-{r}.log" for r in ("r1", "r2")}
    runs = {r: _up(inventory, r, logs[r]) for r in ("r1", "r2")}
    try:
        time.sleep(15)
        second = subprocess.run(
            netns.exec_argv(NS, [str(VENV_BIN / "provisioner"), "-i", str(inventory), "--rack", "r2", "up"]),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert second.returncode == 1 and "rack r2 is being provisioned by another run" in second.stderr
        deadline = time.monotonic() + 2400
        for rack, proc in runs.items():
            try:
                rc = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rc = None
            assert rc == 0, f"up --rack {rack} exited {rc}: {logs[rack].read_text()[-3000:]}"
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)
    events = _events(site)
    fetched = [e for e in events if e["kind"] == "config.fetch" and e.get("node") == "w1"]
    assert fetched and fetched[0]["data"]["remote"]["rack"] == "r2"  # streamed from the boot server
    linked = [e for e in events if e["kind"] == "netboot.remote" and e["outcome"] == "connected"]
    assert linked  # the live link, not a pull afterwards
    registry: dict[str, Any] = {}
    for _ in range(50):  # the shared service leaves with the last run (within a second or two)
        registry = json.loads((site.state_dir / "netboot" / "shared.json").read_text())
        if registry["daemon"] is None:
            break
        time.sleep(0.2)
    assert registry["daemon"] is None and registry["users"] == {}
