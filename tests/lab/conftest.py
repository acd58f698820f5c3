"""The lab fixture: one virtual lab (3 QEMU nodes + BMC emulators + the tool's netboot
service) per test session, always torn down, even when a test fails or is interrupted.

Lab tests are marked ``lab``: they need root and minutes of CPU under TCG. ``make test``
(what CI runs) includes them; ``make test-quick`` leaves them out (``-m "not lab"``). The
lab lives for this module only, so it never competes for the CPU with the end-to-end lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipmi_client
import pytest

from provisioner.inventory import load_inventory
from provisioner.inventory.model import Site
from provisioner.lab import lab as labmod
from provisioner.lab import netns

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "tests/lab/inventory.yaml"
LAB_DIR = REPO / ".lab-test"
VENV_BIN = Path(sys.executable).parent

TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("lab: power-on -> maintenance API reachable")
        for name, secs in sorted(TIMINGS.items()):
            terminalreporter.write_line(f"{name:<8} {secs:6.1f} s")


@dataclass
class Lab:
    """A running lab and the ways tests reach into its namespace."""

    site: Site
    state: dict[str, Any]
    namespace: str
    password: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the lab namespace, as `provisioner lab exec --` does."""
        res = subprocess.run(
            netns.exec_argv(self.namespace, list(argv)),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv[:4])} ... exited {res.returncode}: {res.stderr.strip()[-800:]}"
            )
        return res

    def tool(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The provisioner CLI against the lab inventory, inside the namespace."""
        return self.run(str(VENV_BIN / "provisioner"), "-i", str(INVENTORY), *args, timeout=timeout)

    def ipmitool(self, node: str, *args: str) -> str:
        """The independent IPMI client, run inside the lab namespace."""
        bmc = self.site.node(node).bmc
        assert bmc is not None
        return ipmi_client.ipmitool(
            bmc.address,
            bmc.effective_port,
            bmc.username,
            self.password,
            *args,
            prefix=netns.exec_argv(self.namespace, []),
        )

    def redfish_get(self, node: str, path: str = "") -> dict[str, Any]:
        """A raw HTTPS GET to the node's Redfish system, verified against the lab's CA."""
        bmc = self.site.node(node).bmc
        assert bmc is not None and bmc.ca_file is not None
        url = f"https://{bmc.address}:{bmc.effective_port}/redfish/v1/Systems/{bmc.system_id or node}{path}"
        cfg = f'user = "{bmc.username}:{self.password}"\n'
        res = subprocess.run(
            netns.exec_argv(
                self.namespace,
                [
                    "curl",
                    "-sS",
                    "--fail",
                    "--cacert",
                    str((self.site.base_dir / bmc.ca_file).resolve()),
                    "-K",
                    "-",
                    url,
                ],
            ),
            input=cfg,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if res.returncode != 0:
            raise AssertionError(f"GET {url} failed: {res.stderr.strip()}")
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    def console(self, node: str) -> str:
        path = LAB_DIR / "vms" / node / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def down(self) -> dict[str, Any]:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return labmod.down(self.site, LAB_DIR)


def _start_netboot(lab: Lab) -> subprocess.Popen[bytes]:
    """The tool's own netboot service (dnsmasq + HTTP) inside the namespace, serving the
    stand-in image as the Talos assets."""
    log = open(LAB_DIR / "netboot.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        netns.exec_argv(
            lab.namespace,
            [
                sys.executable,
                str(REPO / "tests/lab/netboot_in_lab.py"),
                str(INVENTORY),
                str(LAB_DIR / "image"),
                str(LAB_DIR / "state"),
            ],
        ),
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=REPO,
        start_new_session=True,
    )
    log.close()
    lab.started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("ready"):
        raise AssertionError(f"netboot service did not start: {line!r}; see {LAB_DIR / 'netboot.log'}")
    return proc


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, taps, QEMU)")
    site = load_inventory(INVENTORY).site
    ns = netns.namespace_name(site.cluster.name)
    labmod.down_namespace(ns, labmod.LabPaths(LAB_DIR))  # leftovers of an interrupted run
    state = labmod.up(site, LAB_DIR)
    the_lab = Lab(site, state, ns, (LAB_DIR / "bmc-password").read_text().strip())
    try:
        _start_netboot(the_lab)
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="session")
def power_on_times() -> dict[str, float]:
    """Wall-clock power-on time per node, filled by the power-on test."""
    return {}


def record_timing(name: str, seconds: float) -> None:
    TIMINGS[name] = seconds
    print(f"lab: {name}: power-on -> maintenance API reachable in {seconds:.1f} s", flush=True)
