"""The lab's inventory checks, QEMU command line and namespace lifecycle (no VM boots).

These run in the quick suite: plan checks are pure; the namespace test needs root and
creates (then deletes) only a ``pvlab-`` namespace of its own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from provisioner.errors import InputError
from provisioner.inventory import load_inventory
from provisioner.lab import lab as labmod
from provisioner.lab import netns
from provisioner.lab.machine import BootSetting
from provisioner.lab.qemu import Disk, QemuSpec, boot_order, qemu_argv

INVENTORY = Path(__file__).parent / "inventory.yaml"


def _site(**node_changes: object):  # type: ignore[no-untyped-def]
    site = load_inventory(INVENTORY).site
    if not node_changes:
        return site
    nodes = [site.nodes[0].model_copy(update=node_changes), *site.nodes[1:]]
    return site.model_copy(update={"nodes": nodes})


def test_plan_maps_inventory_to_vms(tmp_path: Path) -> None:
    plan = labmod.plan(_site(), labmod.LabPaths(tmp_path))
    assert plan.namespace == "pvlab-labtest"
    assert plan.address == "192.168.77.1/24"
    by_name = {n.node: n for n in plan.nodes}
    assert [(by_name[n].protocol, by_name[n].port) for n in ("cp1", "cp2", "cp3")] == [
        ("ipmi", 6231),
        ("ipmi", 6232),
        ("redfish", 8443),
    ]
    vm = by_name["cp1"].vm
    assert (vm.mac, vm.uuid, vm.serial) == (
        "52:54:00:77:00:11",
        "7ab0c7b2-0c1d-4a4e-9d1a-000000000011",
        "LAB-CP1",
    )
    assert [Path(d.path).name for d in vm.disks] == ["vda.qcow2", "vdb.qcow2"]
    assert all(len(n.vm.tap) <= 15 and n.vm.tap.startswith("pvlab-") for n in plan.nodes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"install_disk": "/dev/sda"}, "install_disk"),
        ({"data_disks": ["/dev/vdc"]}, "consecutive"),
        ({"data_disks": ["/dev/vda"]}, "also the install disk"),
    ],
)
def test_plan_refuses_disks_the_vm_cannot_have(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message) as exc:
        labmod.plan(_site(**change), labmod.LabPaths(tmp_path))
    assert "nodes[0] (cp1)" in str(exc.value)


def test_plan_refuses_bmc_off_the_gateway(tmp_path: Path) -> None:
    site = _site()
    bmc = site.nodes[0].bmc
    assert bmc is not None
    bad = _site(bmc=bmc.model_copy(update={"address": "192.168.77.2"}))
    with pytest.raises(InputError, match=r"bmc.address: 192.168.77.2; lab BMCs listen on the gateway"):
        labmod.plan(bad, labmod.LabPaths(tmp_path))


def test_password_is_generated_private_and_must_be_referenced(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="must reference the lab's generated password file"):
        labmod.ensure_password(_site(), labmod.LabPaths(tmp_path))
    secret = tmp_path / "bmc-password"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert 8 <= len(secret.read_text().strip()) <= 20  # IPMI 2.0 limit


def test_boot_order_follows_the_bmc_setting() -> None:
    assert boot_order(BootSetting("pxe", persistent=False, uefi=False)) == "once=n,order=cn"
    assert boot_order(BootSetting("pxe", persistent=True, uefi=False)) == "order=nc"
    # a blank disk must fall through to the network
    assert boot_order(BootSetting("disk", persistent=True, uefi=False)) == "order=cn"


def test_qemu_argv_carries_identity_and_disks(tmp_path: Path) -> None:
    spec = QemuSpec(
        "n1",
        "pvlab-x",
        "pvlab-tn1",
        "52:54:00:00:00:01",
        "7ab0c7b2-0c1d-4a4e-9d1a-000000000001",
        "SER1",
        str(tmp_path),
        (Disk(str(tmp_path / "vda.qcow2"), 8), Disk(str(tmp_path / "vdb.qcow2"), 2)),
    )
    argv = qemu_argv(spec, BootSetting("pxe", persistent=False, uefi=False))
    line = " ".join(argv)
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert "uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000001,serial=SER1" in line
    assert "ifname=pvlab-tn1" in line and "mac=52:54:00:00:00:01" in line
    assert line.index("vda.qcow2") < line.index("vdb.qcow2")
    assert "-no-reboot" in argv


@pytest.mark.netns
def test_network_namespace_is_created_and_removed_completely() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root for network namespaces")
    ns = "pvlab-unittest"
    net = netns.LabNetwork(ns, "pvlab-br0", "192.168.77.1/24")
    try:
        net.create()
        net.create()  # idempotent
        net.add_tap("pvlab-tx")
        assert {"lo", "pvlab-br0", "pvlab-tx"} <= set(net.links())
        sleeper = subprocess.Popen(netns.exec_argv(ns, ["sleep", "60"]))
        assert sleeper.pid in netns.pids(ns)
        host = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        assert "192.168.77.1/" not in host  # the lab address exists only inside the namespace
    finally:
        netns.destroy(ns)
    assert sleeper.wait(timeout=10) != 0
    assert ns not in netns.namespaces()
    assert "pvlab-tx" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
