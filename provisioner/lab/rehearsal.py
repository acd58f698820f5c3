"""A rehearsal: `provisioner up` against a fresh, private copy of the virtual lab.

Used by the end-to-end tests and ``make bench-up``. The inventory is
inventory/examples/lab.yaml, copied with its own cluster name (so its namespace never
collides with a lab an operator has up), its own state and lab directories, and a
shorter boot timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import EventLog
from ..inventory import load_inventory
from ..inventory.model import Site
from . import lab as labmod
from . import netns

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def make_inventory(workdir: Path, cluster: str) -> Path:
    """lab.yaml with paths pointing into ``workdir`` and a distinct cluster name."""
    text = (REPO / "inventory/examples/lab.yaml").read_text()
    lab_dir = workdir / "lab"
    text = text.replace("file:../../.lab/bmc-password", f"file:{lab_dir}/bmc-password")
    text = text.replace("../../.lab/redfish-ca.pem", f"{lab_dir}/redfish-ca.pem")
    text = re.sub(r"(?m)^  state_dir: .*\n", "", text, count=1)  # replaced by the private copy's
    text = re.sub(r"(?m)^  name: lab$", f"  name: {cluster}\n  state_dir: {workdir / 'state'}", text, count=1)
    text = re.sub(r"(?m)^    boot: 600$", "    boot: 300", text)
    path = workdir / "inventory" / "lab.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def import_platform_assets(site: Site) -> None:
    """The lab's stand-in Cozystack installer manifests, imported as ``make up`` does
    (``platform assets lab-import``), so the rehearsal's ``up`` runs the platform stages too."""
    import tempfile

    from ..cozystack import assets
    from . import platform_assets

    with tempfile.TemporaryDirectory() as tmp:
        platform_assets.write(site.cluster.cozystack_version, Path(tmp))
        assets.import_dir(site, Path(tmp))


@dataclass
class LabRun:
    workdir: Path
    inventory: Path
    site: Site

    @property
    def lab_dir(self) -> Path:
        return self.workdir / "lab"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def namespace(self) -> str:
        return netns.namespace_name(self.site.cluster.name)

    @property
    def events(self) -> EventLog:
        return EventLog(self.state / "events.jsonl")

    @classmethod
    def create(
        cls, workdir: Path, cluster: str = "e2e", bmc_faults: dict[str, float] | None = None
    ) -> LabRun:
        inventory = make_inventory(workdir, cluster)
        site = load_inventory(inventory).site
        import_platform_assets(site)
        run = cls(workdir, inventory, site)
        labmod.down_namespace(run.namespace, labmod.LabPaths(run.lab_dir))  # leftovers
        labmod.up(site, run.lab_dir, faults=bmc_faults)
        return run

    def down(self) -> dict[str, Any]:
        return labmod.down(self.site, self.lab_dir)

    def argv(self, *args: str) -> list[str]:
        return netns.exec_argv(
            self.namespace, [str(VENV_BIN / "provisioner"), "-i", str(self.inventory), *args]
        )

    def start_up(self, until: str | None = "cluster") -> subprocess.Popen[str]:
        """``up`` in the rehearsal's namespace; by default up to the formed cluster (the
        hardware stages these rehearsals exercise; the platform stages are tested on the host
        against the API stand-in, where they take seconds instead of TCG minutes)."""
        log = open(self.workdir / "up.log", "a")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            self.argv("--output", "json", "up", *(["--until", until] if until else [])),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=REPO,
            start_new_session=True,
        )
        log.close()
        return proc

    def up(self, timeout: float = 1500, until: str | None = "cluster") -> tuple[int, dict[str, Any]]:
        proc = self.start_up(until)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except BaseException:
            # Our timeout, or the caller's (a test's own timeout interrupts the wait): an `up` left
            # running would hold the rack's lock against every later run on this lab.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        return proc.returncode, json.loads(out) if out.strip() else {}

    def tool(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def wait_events(self, match: Callable[[list[Any]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match(self.events.read()):
                return True
            time.sleep(1)
        return False

    def node_timings(self) -> dict[str, float]:
        """Seconds from each node's last power-on to its installed OS answering."""
        on: dict[str, float] = {}
        done: dict[str, float] = {}
        for ev in self.events.iter():
            if ev.kind != "node.step" or ev.node is None:
                continue
            phase = ev.data.get("phase")
            if phase == "powered-on":
                on[ev.node] = ev.time
            elif phase == "installed" and ev.node in on:
                done[ev.node] = ev.time - on[ev.node]
        return done
