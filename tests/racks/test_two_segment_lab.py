"""The two-segment lab, for real: rack r2 behind a router namespace, the site's own DHCP
server on r2's segment, a boot server running sshd (the tool pushes to it over the routed
path, host key checked) and proxy-DHCP, and a UEFI VM whose BMC's EFI flag selects OVMF.

One lab for the module (a copy of ``inventory/examples/lab-racks.yaml`` under its own cluster
name, so it never meets an operator's lab), always torn down. Marked ``lab``: needs root and
a few minutes of CPU under TCG (one VM boots, up to the config fetch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provisioner.inventory import load_inventory
from provisioner.inventory.model import Site
from provisioner.lab import lab as labmod
from provisioner.lab import netns, segments
from provisioner.lab.qemu import OVMF_CODE

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory/examples/lab-racks.yaml"
LAB_DIR = REPO / ".lab-racks-test"
CLUSTER = "lrtest"
NS = netns.namespace_name(CLUSTER)
ROUTER_NS, BOOT_NS = f"{NS}.r2-rt", f"{NS}.r2-bs"
W1_MAC, W1_IP, BOOT_IP = "52:54:00:78:00:21", "192.168.78.131", "192.168.78.140"
VENV_BIN = Path(sys.executable).parent


@dataclass
class RacksLab:
    site: Site
    inventory: Path
    state: dict[str, Any]
    started: list[subprocess.Popen[bytes]]

    def run(self, ns: str, *argv: str, timeout: float = 120, check: bool = True) -> str:
        res = subprocess.run(
            netns.exec_argv(ns, list(argv)), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv[:5])} exited {res.returncode}: {res.stdout.strip()[-800:]} "
                f"{res.stderr.strip()[-800:]}"
            )
        return res.stdout

    def tool(self, *args: str, timeout: float = 180) -> str:
        return self.run(NS, str(VENV_BIN / "provisioner"), "-i", str(self.inventory), *args, timeout=timeout)

    def bmc(self, *args: str) -> str:
        """A BMC command through the tool; exit 1 means "a rerun may succeed", and the emulated
        BMCs share two busy cores with everything else, so a session may time out."""
        failure = AssertionError("no attempt")
        for _attempt in range(5):
            try:
                return self.tool(*args)
            except AssertionError as exc:
                if "exited 1" not in str(exc):
                    raise
                failure = exc
                time.sleep(5)
        raise failure

    @property
    def segment_dir(self) -> Path:
        return LAB_DIR / "segments" / "r2"

    @property
    def remote_dir(self) -> Path:
        """The boot server's bundle, as its sshd sees it: ~root is the lab's directory."""
        return self.segment_dir / "home" / ".provisioner" / CLUSTER / "r2"

    def vm_status(self, node: str) -> dict[str, Any]:
        return json.loads((LAB_DIR / "vms" / node / "status.json").read_text())  # type: ignore[no-any-return]


def _mac(ns: str, dev: str) -> str:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show", dev], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)[0]["address"]  # type: ignore[no-any-return]


def _wait(what: str, check: Any, timeout: float, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def racks_lab() -> Iterator[RacksLab]:
    if os.geteuid() != 0:
        pytest.fail("the two-segment lab needs root (network namespaces, taps, QEMU)")
    inv_dir = LAB_DIR / "inv"
    labmod.down_namespace(NS, labmod.LabPaths(LAB_DIR))  # leftovers of an interrupted run
    inv_dir.mkdir(parents=True, exist_ok=True)
    text = (
        EXAMPLE.read_text().replace("../../.lab-racks/", "../").replace("name: labracks", f"name: {CLUSTER}")
    )
    inventory = inv_dir / "lab-racks.yaml"
    inventory.write_text(text)
    site = load_inventory(inventory).site
    state = labmod.up(site, LAB_DIR)
    lab = RacksLab(site, inventory, state, [])
    try:
        yield lab
    finally:
        for proc in lab.started:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        gone = labmod.down(site, LAB_DIR)
        assert sorted(gone["segments"]) == [BOOT_NS, ROUTER_NS]
        assert not [ns for ns in netns.namespaces() if ns == NS or ns.startswith(NS + ".")]


def test_rack2_is_routed_from_the_lab_never_bridged(racks_lab: RacksLab) -> None:
    assert racks_lab.state["segments"]["r2"]["boot_server"] == f"{BOOT_IP}:22"
    banner = racks_lab.run(
        NS,
        sys.executable,
        "-c",
        f"import socket; print(socket.create_connection(('{BOOT_IP}', 22), 10).recv(64))",
    )
    assert "SSH-2.0-OpenSSH" in banner  # the boot server's real sshd answers across the router
    neigh = racks_lab.run(NS, "ip", "-j", "neigh", "show", BOOT_IP)
    lladdr = json.loads(neigh)[0]["lladdr"]
    # The lab side reaches r2 through the router's leg (proxy ARP), never the boot server's own NIC.
    assert lladdr == _mac(ROUTER_NS, segments.ROUTER_UPLINK)
    assert lladdr != _mac(BOOT_NS, segments.BOOT_IF)
    # And the boot server's default route leads back through the same router.
    assert "192.168.78.1" in racks_lab.run(BOOT_NS, "ip", "route", "show", "default")


def _udhcpc(ns: str, dev: str, out: Path) -> dict[str, str] | None:
    script = out.with_suffix(".sh")
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    out.unlink(missing_ok=True)
    subprocess.run(
        netns.exec_argv(ns, ["busybox", "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "1", "-A", "1",
                             "-i", dev, "-s", str(script)]),
        capture_output=True, timeout=40,
    )  # fmt: skip
    if not out.exists():
        return None
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


def test_site_dhcp_serves_r2s_segment_only(racks_lab: RacksLab, tmp_path: Path) -> None:
    """A client with w1's MAC gets w1's reserved address and the gateway on r2's segment; the
    same client on the lab bridge gets nothing: DHCP broadcasts stay on their segment."""
    probe = f"{NS}.probe"
    subprocess.run(["ip", "netns", "add", probe], check=True)
    try:
        subprocess.run(["ip", "-n", probe, "link", "add", "c0", "address", W1_MAC, "type", "veth", "peer",
                        "name", "pvlab-probe", "netns", ROUTER_NS], check=True)  # fmt: skip
        racks_lab.run(ROUTER_NS, "ip", "link", "set", "pvlab-probe", "master", segments.SEGMENT_BRIDGE)
        racks_lab.run(ROUTER_NS, "ip", "link", "set", "pvlab-probe", "up")
        racks_lab.run(probe, "ip", "link", "set", "c0", "up")
        lease = _udhcpc(probe, "c0", tmp_path / "r2.env")
        assert lease is not None, "no lease on r2's segment"
        assert (lease["ip"], lease["router"], lease["subnet"]) == (W1_IP, "192.168.78.1", "255.255.255.0")
        assert lease["serverid"] == "192.168.78.129"  # the site DHCP server, on the router
        assert "boot_file" not in lease  # addresses only: boot options are the proxy's job
        # Move the probe to the lab bridge: nobody there hands out r2's addresses.
        racks_lab.run(ROUTER_NS, "ip", "link", "set", "pvlab-probe", "netns", NS)
        racks_lab.run(NS, "ip", "link", "set", "pvlab-probe", "master", labmod.BRIDGE)
        racks_lab.run(NS, "ip", "link", "set", "pvlab-probe", "up")
        assert _udhcpc(probe, "c0", tmp_path / "lab.env") is None
    finally:
        subprocess.run(["ip", "netns", "del", probe], check=False)


def _qemu_cmdline(racks_lab: RacksLab, node: str) -> str:
    pid = racks_lab.vm_status(node)["pid"]
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_uefi_node_boots_from_site_dhcp_and_the_boot_servers_proxy(racks_lab: RacksLab) -> None:
    """Push to the boot server over SSH (host key checked), PXE-boot w1 through its BMC with the
    EFI flag: OVMF, an address from the site DHCP server, the boot file from the proxy, the
    Talos stand-in from the boot server, and its config fetched there."""
    racks_lab.tool("secrets", "generate")
    racks_lab.tool("configs", "generate")
    log = open(LAB_DIR / "netboot-r1.log", "ab")  # noqa: SIM115 - handed to the child
    serve = subprocess.Popen(  # the site's own netboot service (rack r1; the stand-in's install files)
        netns.exec_argv(NS, [str(VENV_BIN / "provisioner"), "-i", str(racks_lab.inventory), "--rack", "r1",
                             "netboot", "serve"]),
        stdout=log, stderr=log, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    log.close()
    racks_lab.started.append(serve)
    pushed = racks_lab.tool("netboot", "push", "--rack", "r2")
    assert "DHCP on (eth0)" in pushed and f"http://{BOOT_IP}:8080" in pushed
    assert (racks_lab.remote_dir / "manifest.json").is_file()
    assert not Path(f"/root/.provisioner/{CLUSTER}").exists()  # the boot server's home is its own
    # Every BMC answers first. (The lab's IPMI emulators answer no session until the first
    # BMC of the fleet has served one: a known emulator quirk, outside what this test checks.)
    racks_lab.bmc("power", "status")
    racks_lab.bmc("--node", "w1", "bootdev", "pxe")
    racks_lab.bmc("--node", "w1", "power", "on")
    try:
        boot = racks_lab.vm_status("w1")["boots"][-1]
        assert (boot["device"], boot["uefi"]) == ("pxe", True)
        assert f"file={OVMF_CODE}" in _qemu_cmdline(racks_lab, "w1")
        remote_events = racks_lab.remote_dir / "events.jsonl"
        fetched = _wait(
            "w1's config fetch on the boot server",
            lambda: [e for e in _events(remote_events) if e["kind"] == "config.fetch" and e["node"] == "w1"],
            timeout=600,
            every=5,
        )
        assert fetched[0]["outcome"] == "ok"
        kinds = [e["kind"] for e in _events(remote_events) if e["node"] == "w1"]
        assert kinds.index("ipxe.script") < kinds.index("config.fetch")
        site_log = (racks_lab.segment_dir / "site-dhcp.log").read_text()
        assert f"DHCPACK(rbr0) {W1_IP} {W1_MAC}" in site_log  # the address: the site's DHCP server
        assert "PXEClient:Arch:00007" in site_log  # ... asked by UEFI firmware
        proxy_log = (racks_lab.remote_dir / "run" / "dnsmasq.log").read_text()
        assert f"PXE(eth0) {W1_IP} {W1_MAC} snponly.efi" in proxy_log or "proxy" in proxy_log
        assert f"DHCPACK(eth0) {W1_IP}" not in proxy_log  # the proxy never hands out the address
        racks_lab.tool("netboot", "remote-status", "--rack", "r2")
        local = _events(racks_lab.site.state_dir / "events.jsonl")
        merged = [e for e in local if e.get("node") == "w1" and e["kind"] in ("ipxe.script", "config.fetch")]
        assert {e["kind"] for e in merged} == {"ipxe.script", "config.fetch"}
    finally:
        racks_lab.bmc("--node", "w1", "power", "off")


def test_bmc_legacy_flag_boots_the_same_vm_with_bios_firmware(racks_lab: RacksLab) -> None:
    """The EFI flag really steers: set PXE without it over IPMI and the next start is SeaBIOS."""
    bmc = racks_lab.site.node("w1").bmc
    assert bmc is not None
    password = (LAB_DIR / "bmc-password").read_text().strip()
    ipmi = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", str(bmc.address), "-p", str(bmc.effective_port),
            "-U", bmc.username, "-E"]  # fmt: skip
    env = {**os.environ, "IPMI_PASSWORD": password}
    for args in (("chassis", "bootdev", "pxe"), ("chassis", "power", "on")):
        for _attempt in range(5):  # the emulated BMC shares two busy cores; a session may time out
            res = subprocess.run(netns.exec_argv(NS, [*ipmi, *args]), capture_output=True, text=True, env=env)
            if res.returncode == 0:
                break
            time.sleep(2)
        assert res.returncode == 0, res.stderr
    try:
        _wait("w1 powered on", lambda: racks_lab.vm_status("w1")["powered"], timeout=60, every=1)
        boot = racks_lab.vm_status("w1")["boots"][-1]
        assert (boot["device"], boot["uefi"]) == ("pxe", False)
        cmdline = _qemu_cmdline(racks_lab, "w1")
        assert "pflash" not in cmdline and "-boot once=n,order=cn" in cmdline
    finally:
        racks_lab.bmc("--node", "w1", "power", "off")
