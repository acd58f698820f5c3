"""Acceptance of the virtual lab: BMCs really drive QEMU, nodes PXE-boot the stand-in from
the tool's netboot service into maintenance mode, and ``lab down`` leaves nothing behind.

The tests run in order on one lab (session fixture); each checks one claim with an
independent client where the issue asks for one (ipmitool, a raw Redfish GET).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.lab import netns

from .conftest import LAB_DIR, Lab, record_timing

pytestmark = pytest.mark.lab

IPMI_NODES = ("cp1", "cp2")
REDFISH_NODES = ("cp3",)
POWER_ON: dict[str, float] = {}


def _bootparam(lab: Lab, node: str) -> str:
    out = lab.ipmitool(node, "chassis", "bootparam", "get", "5")
    return next(line for line in out.splitlines() if "Boot Device Selector" in line)


def test_vms_start_powered_off(lab: Lab) -> None:
    for node in IPMI_NODES:
        assert lab.ipmitool(node, "chassis", "power", "status").strip() == "Chassis Power is off"
    for node in REDFISH_NODES:
        assert lab.redfish_get(node)["PowerState"] == "Off"
    assert not [p for p in netns.pids(lab.namespace) if "qemu" in Path(f"/proc/{p}/comm").read_text()]


def test_tool_sets_one_time_pxe(lab: Lab) -> None:
    lab.tool("bootdev", "pxe")
    for node in IPMI_NODES:
        assert "Force PXE" in _bootparam(lab, node)
        assert "Options apply to only next boot" in lab.ipmitool(node, "chassis", "bootparam", "get", "5")
    for node in REDFISH_NODES:
        boot = lab.redfish_get(node)["Boot"]
        assert boot["BootSourceOverrideTarget"] == "Pxe"
        assert boot["BootSourceOverrideEnabled"] == "Once"


def test_tool_powers_on(lab: Lab) -> None:
    lab.tool("power", "on")
    now = time.time()
    for node in (*IPMI_NODES, *REDFISH_NODES):
        POWER_ON[node] = now
    for node in IPMI_NODES:
        assert lab.ipmitool(node, "chassis", "power", "status").strip() == "Chassis Power is on"
    for node in REDFISH_NODES:
        assert lab.redfish_get(node)["PowerState"] == "On"
    # A real QEMU process per node, inside the lab namespace, with the inventory's MAC.
    cmdlines = [
        Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        for p in netns.pids(lab.namespace)
    ]
    for node in lab.site.nodes:
        assert any(
            "qemu-system-x86_64" in c and f"mac={node.boot.mac}" in c and f"uuid={node.uuid}" in c
            for c in cmdlines
        ), node.name


def test_nodes_reach_maintenance_mode(lab: Lab) -> None:
    assert POWER_ON, "power-on test did not run"
    args = [f"{n.name}={n.ip}@{POWER_ON[n.name]}" for n in lab.site.nodes]
    res = lab.run(
        str(Path(__file__).parent.parent.parent / ".venv/bin/python"),
        str(Path(__file__).parent / "maintenance_probe.py"),
        "420",
        *args,
        timeout=480,
    )
    results = json.loads(res.stdout)
    for node in lab.site.nodes:
        r = results[node.name]
        assert "error" not in r, (
            f"{node.name}: {r['error']}\n--- console tail ---\n{lab.console(node.name)[-3000:]}"
        )
        assert r["mode"] == "maintenance"
        assert "standin" in r["tag"]
        assert r["hostname"] == node.name
        record_timing(node.name, r["seconds"])
        assert "talos stand-in" in lab.console(node.name)


def test_one_time_pxe_was_consumed(lab: Lab) -> None:
    for node in IPMI_NODES:
        assert "Force PXE" not in _bootparam(lab, node)
    for node in REDFISH_NODES:
        boot = lab.redfish_get(node)["Boot"]
        assert not (boot["BootSourceOverrideTarget"] == "Pxe" and boot["BootSourceOverrideEnabled"] == "Once")


def test_persistent_boot_device_reads_back(lab: Lab) -> None:
    lab.tool("bootdev", "disk", "--persistent")
    for node in IPMI_NODES:
        assert "Force Boot from default Hard-Drive" in _bootparam(lab, node)
    for node in REDFISH_NODES:
        boot = lab.redfish_get(node)["Boot"]
        assert boot["BootSourceOverrideTarget"] == "Hdd"
        assert boot["BootSourceOverrideEnabled"] == "Continuous"


def test_tool_powers_off(lab: Lab) -> None:
    lab.tool("power", "off")
    for node in IPMI_NODES:
        assert lab.ipmitool(node, "chassis", "power", "status").strip() == "Chassis Power is off"
    for node in REDFISH_NODES:
        assert lab.redfish_get(node)["PowerState"] == "Off"


def _status(pid: int) -> str:
    """Name, state and parent of a process, for the failure message."""
    try:
        fields = dict(
            line.split(":\t", 1)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":\t" in line
        )
    except OSError:
        return "gone"
    name, state, ppid = (fields.get(k, "?").strip() for k in ("Name", "State", "PPid"))
    return f"{name} {state} ppid {ppid}"


def test_lab_down_leaves_nothing(lab: Lab) -> None:
    before = netns.pids(lab.namespace)
    assert before, "the lab daemon should be running inside the namespace"
    from provisioner.state import Phase, StateStore

    store = StateStore(lab.site.state_dir)
    node = lab.site.nodes[0].name
    store.update(node, phase=Phase.READY, installed=True)  # what `up` recorded of the old VM
    result = lab.down()
    assert result["namespace"] == lab.namespace
    # Its VM is gone: the next `up` provisions a new one instead of trusting "ready".
    assert node in result["forgotten"] and StateStore(lab.site.state_dir).node(node).phase is Phase.BLANK
    assert lab.namespace not in netns.namespaces()
    assert not (LAB_DIR / "vms").exists(), "VM disks left behind"
    # An orphan that has exited is dead, only its exit status waits for PID 1 to reap it (not
    # always at once here); a zombie of ours (ppid not 1) would still count.
    alive = {
        p: status
        for p in before
        if (status := _status(p)) != "gone" and not (" Z " in status and status.endswith("ppid 1"))
    }
    assert alive == {}, f"lab processes left: {alive}"
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not [line for line in links.splitlines() if "pvlab-" in line]
