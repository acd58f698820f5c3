"""The two-segment lab as data: routed rack plans, the site DHCP server's config, UEFI
firmware selection and the boot server's proxy-DHCP bundle. No root, no VM: these run in
``make test-quick``; the lab itself is exercised in ``test_two_segment_lab.py``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioner.errors import InputError
from provisioner.inventory import load_inventory
from provisioner.inventory.model import Site
from provisioner.lab import lab as labmod
from provisioner.lab import segments
from provisioner.lab.machine import BootSetting
from provisioner.lab.qemu import OVMF_CODE, Disk, QemuSpec, qemu_argv
from provisioner.netboot import remote
from provisioner.state import StateStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory/examples/lab-racks.yaml"


def _site(tmp_path: Path, *edits: tuple[str, str]) -> Site:
    text = EXAMPLE.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    inv = tmp_path / "lab-racks.yaml"
    inv.write_text(text)
    return load_inventory(inv).site


def test_example_rack2_is_a_routed_segment_with_its_own_block(tmp_path: Path) -> None:
    site = _site(tmp_path)
    plan = labmod.plan(site, labmod.LabPaths(tmp_path / "lab"))
    assert plan.namespace == "pvlab-labracks"
    (seg,) = plan.segments
    assert (seg.rack, seg.router_ns, seg.boot_ns) == ("r2", "pvlab-labracks.r2-rt", "pvlab-labracks.r2-bs")
    assert seg.block == "192.168.78.128/28"  # w1 (.131) and the boot server (.140)
    assert seg.segment_address == "192.168.78.129" and seg.uplink_address == "192.168.78.254"
    assert [(h.mac, h.ip, h.name) for h in seg.hosts] == [("52:54:00:78:00:21", "192.168.78.131", "w1")]
    by_name = {n.node: n for n in plan.nodes}
    assert by_name["w1"].segment == "r2" and by_name["w1"].uefi
    assert by_name["w1"].vm.namespace == seg.router_ns  # its QEMU and tap live behind the router
    assert all(by_name[c].segment is None and not by_name[c].uefi for c in ("cp1", "cp2", "cp3"))
    assert all(by_name[c].vm.namespace == "pvlab-labracks" for c in ("cp1", "cp2", "cp3"))


def test_a_rack_block_holding_another_racks_node_is_refused(tmp_path: Path) -> None:
    # r2's worker and boot server around rack r1's control planes: the block spans them too.
    site = _site(
        tmp_path, ("ip: 192.168.78.131", "ip: 192.168.78.9"), ("host: 192.168.78.140", "host: 192.168.78.14")
    )
    with pytest.raises(InputError) as err:
        segments.plan_segments(site)
    msg = str(err.value)
    assert "racks[1] (r2)" in msg and "192.168.78.8/29 also holds" in msg and "192.168.78.11 (cp1)" in msg
    assert "a site address" in msg  # the VIP, .10


def test_a_boot_server_outside_the_subnet_is_refused(tmp_path: Path) -> None:
    site = _site(tmp_path, ("host: 192.168.78.140", "host: 10.9.9.9"))
    with pytest.raises(InputError, match=r"racks\[1\] \(r2\)\.boot_server\.host: 10\.9\.9\.9 is outside"):
        segments.plan_segments(site)


def test_a_boot_server_named_by_host_name_is_refused_in_the_lab(tmp_path: Path) -> None:
    site = _site(tmp_path, ("host: 192.168.78.140", "host: boot-r2.example"))
    with pytest.raises(InputError, match="must be an IP address"):
        segments.plan_segments(site)


def test_site_dhcp_server_hands_addresses_only_and_passes_dnsmasq_test(tmp_path: Path) -> None:
    (seg,) = segments.plan_segments(_site(tmp_path))
    conf = segments.dhcp_conf(seg, tmp_path)
    assert "dhcp-host=52:54:00:78:00:21,192.168.78.131,w1" in conf
    assert "dhcp-option=option:router,192.168.78.1" in conf
    for boot_option in ("dhcp-boot", "pxe-service", "enable-tftp", "dhcp-match"):
        assert boot_option not in conf
    path = tmp_path / "site.conf"
    path.write_text(conf)
    res = subprocess.run(["dnsmasq", "--test", f"--conf-file={path}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _spec(tmp_path: Path) -> QemuSpec:
    disks = (Disk(str(tmp_path / "vda.qcow2"), 8), Disk(str(tmp_path / "vdb.qcow2"), 2))
    return QemuSpec("w1", "ns", "tap0", "52:54:00:78:00:21", "u", "s", str(tmp_path), disks)


def test_the_bmcs_efi_flag_chooses_the_firmware_and_the_boot_order(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    bios = qemu_argv(spec, BootSetting("pxe", persistent=False, uefi=False))
    assert "-boot" in bios and not any("pflash" in a for a in bios)
    uefi_pxe = " ".join(qemu_argv(spec, BootSetting("pxe", persistent=False, uefi=True)))
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}" in uefi_pxe
    assert f"file={spec.uefi_vars}" in uefi_pxe and "-boot" not in uefi_pxe
    assert "mac=52:54:00:78:00:21,bootindex=1" in uefi_pxe and "serial=s-0,bootindex=2" in uefi_pxe
    uefi_disk = " ".join(qemu_argv(spec, BootSetting("disk", persistent=True, uefi=True)))
    assert "mac=52:54:00:78:00:21,bootindex=2" in uefi_disk and "serial=s-0,bootindex=1" in uefi_disk
    assert "serial=s-1,bootindex" not in uefi_disk  # only the install disk is a boot entry


def test_boot_server_bundle_runs_proxy_dhcp_when_the_rack_says_so(tmp_path: Path) -> None:
    site = _site(tmp_path)
    root = tmp_path / "remote"
    bundle = remote.build_bundle(
        site,
        "r2",
        site.select(("r2",)),
        StateStore(site.state_dir),
        root=str(root),
        python="/usr/bin/python3",
        server="192.168.78.140",
        http_port=8080,
        interface="eth0",
        dhcp=True,
        assets_root=tmp_path / "no-assets",
    )
    conf = bundle.files["run/dnsmasq.conf"][0].decode()
    assert "dhcp-range=192.168.78.0,proxy,255.255.255.0" in conf
    assert "dhcp-host=52:54:00:78:00:21,set:known" in conf  # boot options for rack r2's node only
    assert "192.168.78.131" not in conf  # the address is the site DHCP server's to give
    assert "52:54:00:78:00:11" not in conf  # rack r1
    assert 'pxe-service=tag:!ipxe,X86-64_EFI,"provisioner iPXE",snponly.efi' in conf


def test_a_rack_without_a_dhcp_setting_keeps_the_sites_mode(tmp_path: Path) -> None:
    site = _site(tmp_path, (", dhcp: proxy}", "}"))
    rsite = remote.build_bundle.__globals__["rack_site"](site, "192.168.78.140", 8080, "eth0", "r2")
    assert rsite.networks is not None and rsite.networks.management.dhcp.mode.value == "reservations"


def test_the_standin_takes_its_ramdisk_url_under_a_name_the_efi_stub_leaves_alone() -> None:
    from provisioner.lab.standin.bootflow import ARG_INITRD, parse_cmdline

    args = parse_cmdline("initrd=initramfs-amd64.xz standin.ramdisk=http://192.168.78.1:8080/assets/i.xz")
    assert args[ARG_INITRD] == "http://192.168.78.1:8080/assets/i.xz"
    assert "initrd=" not in "standin.ramdisk=http://x"  # what Linux's EFI stub scans for
