"""The two-segment lab, for real: rack r2 behind a router namespace, the site's own DHCP
server on r2's segment, a boot server running sshd (the tool pushes to it over the routed
path, host key checked) and proxy-DHCP, and a UEFI VM whose BMC's EFI flag selects OVMF;
then ``up --rack r1`` and ``up --rack r2`` in parallel to a formed cluster, with r2's worker
installed through its boot server and rebooted from disk without a re-push.

One lab for the module (a copy of ``inventory/examples/lab-racks.yaml`` under its own cluster
name, so it never meets an operator's lab), always torn down. Marked ``lab``: needs root and
about 8 minutes of CPU under TCG (4 VMs to a formed cluster; one reboot).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
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

    def talos(self, call: str, ip: str) -> str:
        """A Talos API call to a node over mutual TLS, from inside the lab; its result as JSON."""
        code = (
            "import asyncio, dataclasses, json, sys\nfrom pathlib import Path\n"
            "from provisioner.workflow import talos_ops\n"
            f"r = asyncio.run(talos_ops.{call}({ip!r}, Path({str(self.talosconfig)!r})))\n"
            "print(json.dumps([dataclasses.asdict(m) for m in r] if isinstance(r, list) else r))\n"
        )
        return self.run(NS, sys.executable, "-c", code, timeout=60)

    @property
    def talosconfig(self) -> Path:
        return self.site.state_dir / "talosconfig"

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


def _wait(what: str, check: Any, timeout: float, every: float = 2.0, explain: Any = None) -> Any:
    """Poll until ``check`` returns something; on time-out fail with ``explain()``'s account
    of what did happen (the deadline stays below pytest's own, so that account is printed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    story = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{story}")


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
    # A run of its own: no state, and no boot-server files, from an earlier run of this module.
    shutil.rmtree(site.state_dir, ignore_errors=True)
    shutil.rmtree(LAB_DIR / "segments", ignore_errors=True)
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
        # The command line this boot's QEMU was started with, as the lab recorded it: reading the
        # process's own once raced a guest reboot that had already ended it ('' from a zombie).
        assert "pflash" not in boot["cmdline"] and "-boot once=n,order=cn" in boot["cmdline"]
    finally:
        racks_lab.bmc("--node", "w1", "power", "off")


@dataclass
class RackRun:
    """One ``up --rack`` process in the lab's namespace, its output in a file."""

    rack: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _start_up(racks_lab: RacksLab, rack: str, *extra: str) -> RackRun:
    log = LAB_DIR / f"up-{rack}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            netns.exec_argv(NS, [str(VENV_BIN / "provisioner"), "-i", str(racks_lab.inventory),
                                 "--rack", rack, "up", "--until", "cluster", *extra]),
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
    racks_lab.started.append(proc)
    return RackRun(rack, proc, log)


def _session_sshd_child(follow_marker: bytes) -> int | None:
    """The sshd process serving the boot-server session whose command line holds the marker:
    the follower's nearest ancestor named ``sshd: ...`` (the per-connection child)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if b"follow" not in cmd or follow_marker not in cmd:
            continue
        pid = int(d.name)
        for _hop in range(5):
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd: "):
                    return pid
            except (OSError, ValueError, IndexError):
                break
    return None


def _remote_merged(local: list[dict[str, Any]]) -> list[int]:
    return [
        e["data"]["remote"]["id"]
        for e in local
        if (e.get("data") or {}).get("remote", {}).get("rack") == "r2"
    ]


def _console(node: str) -> str:
    return (LAB_DIR / "vms" / node / "console.log").read_text(errors="replace").replace("\r", "")


def test_two_racks_in_parallel_form_the_cluster_with_rack2_through_its_boot_server(
    racks_lab: RacksLab,
) -> None:
    """``up --rack r1`` and ``up --rack r2`` at once on the two-segment lab: r1's control planes
    (BIOS, the site's netboot service) form the cluster; r2's UEFI worker is installed through
    its boot server (the site's DHCP server gives the address, the boot server's proxy-DHCP the
    boot file). Meanwhile: a second run on r2 is refused, r2's SSH session is dropped (its sshd
    child killed) and resumed with every boot-server event merged once, and w1's config fetch
    reaches the local event log while r2's run is still going."""
    local_log = racks_lab.site.state_dir / "events.jsonl"
    r1 = _start_up(racks_lab, "r1")
    r2 = _start_up(racks_lab, "r2", "--keep-boot-servers")
    runs = (r1, r2)
    killed_session = refused = False
    fetch_seen_live = False
    deadline = time.monotonic() + 1500
    while any(r.proc.poll() is None for r in runs):
        assert time.monotonic() < deadline, "the two rack runs did not finish in 25 min"
        local = _events(local_log)
        connected = [e for e in local if e["kind"] == "netboot.remote" and e["outcome"] == "connected"]
        if connected and not refused:
            again = subprocess.run(
                netns.exec_argv(NS, [str(VENV_BIN / "provisioner"), "-i", str(racks_lab.inventory), "--rack",
                                     "r2", "up", "--until", "cluster"]),
                capture_output=True, text=True, timeout=120, cwd=REPO,
            )  # fmt: skip
            assert again.returncode == 1, again.stdout + again.stderr
            assert "rack r2 is being provisioned by another run (pid " in again.stderr
            refused = True
        if connected and not killed_session:
            child = _session_sshd_child(f".provisioner/{CLUSTER}/r2\0".encode())
            if child is not None:
                os.kill(child, signal.SIGKILL)  # the session drops in the middle of the run
                killed_session = True
        if not fetch_seen_live and r2.proc.poll() is None:
            fetch_seen_live = any(e["kind"] == "config.fetch" and e.get("node") == "w1" for e in local)
        time.sleep(1)
    for run in runs:
        assert run.proc.returncode == 0, (
            f"up --rack {run.rack} exited {run.proc.returncode}:\n{run.output()[-3000:]}"
        )
    assert refused and killed_session
    assert fetch_seen_live, "w1's config fetch reached the local log only after r2's run ended"
    assert "cluster: formed" in r1.output() and "cluster: formed" in r2.output()
    # The cluster: every control plane an etcd member, w1 installed and answering over mutual TLS.
    members = racks_lab.talos("etcd_members", "192.168.78.11")
    assert len(json.loads(members)) == 3, members
    assert json.loads(racks_lab.talos("secure_version", W1_IP)) is not None
    # The dropped session was resumed from its cursor: every boot-server event merged exactly once.
    remote_ids = [e["id"] for e in _events(racks_lab.remote_dir / "events.jsonl")]
    local = _events(local_log)
    assert remote_ids and _remote_merged(local) == remote_ids == list(range(1, len(remote_ids) + 1))
    link = [e["outcome"] for e in local if e["kind"] == "netboot.remote"]
    assert "dropped" in link and link.count("connected") >= 2, link
    # UEFI through the site's DHCP server (the address) and the boot server's proxy (the boot file).
    site_log = (racks_lab.segment_dir / "site-dhcp.log").read_text()
    assert f"DHCPACK(rbr0) {W1_IP} {W1_MAC}" in site_log
    assert "PXEClient:Arch:00007" in site_log  # asked by UEFI firmware
    proxy_log = (racks_lab.remote_dir / "run" / "dnsmasq.log").read_text()
    assert "proxy" in proxy_log and f"DHCPACK(eth0) {W1_IP}" not in proxy_log
    proxied = [e for e in local if e["kind"] == "dhcp.proxy" and e.get("node") == "w1"]
    assert proxied, "no proxy-DHCP answer to w1 in the local event log"
    answers = {(e["data"]["remote"]["rack"], e["data"]["mac"], e["data"]["arch"]) for e in proxied}
    assert answers == {("r2", W1_MAC, 7)}  # from r2's boot server, to w1's UEFI (x86-64) firmware
    assert f"http://{BOOT_IP}:8080/boot.ipxe" in {e["data"]["bootfile"] for e in proxied}
    leases = [e for e in local if e["kind"] == "dhcp.lease" and e.get("node") == "w1"]
    assert leases == []  # the address is the site DHCP server's: no lease from the boot server
    first_ask = next(e for e in local if e["kind"] == "ipxe.script" and e.get("node") == "w1")
    assert first_ask["data"].get("ip") == W1_IP  # ... and the node asked from the site's address
    w1_remote = [e["kind"] for e in _events(racks_lab.remote_dir / "events.jsonl") if e.get("node") == "w1"]
    assert w1_remote.index("ipxe.script") < w1_remote.index("config.fetch")
    # After the install, w1 came back from its disk through the UEFI path (OVMF -> systemd-boot).
    console = _console("w1")
    installed = console.index("talos stand-in: installed to /dev/vda (UEFI")
    assert re.search(r'BdsDxe: starting Boot\w+ "UEFI Misc Device"', console[installed:])
    assert "standin.boot=disk" in console[installed:]
    pushed = json.loads((racks_lab.remote_dir / "manifest.json").read_text())
    assert [(n["name"], n["answer"]) for n in pushed["nodes"]] == [("w1", "install")]  # as pushed
    # ... and w1's install reached the kept boot server before r2's run returned (the link's
    # last handover): its next network boot is answered from the disk without a re-push.
    states = json.loads((racks_lab.remote_dir / "node-states.json").read_text())
    assert states.get("w1") == {"installed": True}, states


def _w1_story(racks_lab: RacksLab, console_from: int, events_from: int) -> str:
    """What w1 and its boot server did since the reboot began: for a failure's message."""
    remote = _events(racks_lab.remote_dir / "events.jsonl")[events_from:]
    status = racks_lab.vm_status("w1")
    return (
        f"w1 powered={status.get('powered')} boots={status.get('boots', [])[-3:]}\n"
        f"boot-server events since: {[(e['id'], e['kind'], e['outcome']) for e in remote]}\n"
        f"w1 console since (last 2000 chars):\n{_console('w1')[console_from:][-2000:]}"
    )


@pytest.mark.timeout(1200)
def test_installed_rack2_node_reboots_from_disk_without_a_repush(racks_lab: RacksLab) -> None:
    """The boot server learnt "w1 installed" over the live session (its pushed manifest still
    says install): a network boot of w1 now gets "boot from the local disk", and iPXE's exit
    takes OVMF to the installed system."""
    manifest = racks_lab.remote_dir / "manifest.json"
    pushed = manifest.read_bytes()
    remote_events = racks_lab.remote_dir / "events.jsonl"
    before = len(_events(remote_events))
    marker = len(_console("w1"))
    # Off, PXE once, on: each step idempotent, so a BMC command retried after a late answer
    # cannot boot w1 twice. A retried "power cycle" could: its second boot, the one-time PXE
    # flag already spent by the first, goes to the disk and never asks the boot server.
    racks_lab.bmc("--node", "w1", "power", "off")
    racks_lab.bmc("--node", "w1", "bootdev", "pxe")
    racks_lab.bmc("--node", "w1", "power", "on")
    _wait("w1 powered on", lambda: racks_lab.vm_status("w1")["powered"], timeout=60, every=1)
    boots = racks_lab.vm_status("w1")["boots"]
    assert (boots[-1]["device"], boots[-1]["uefi"]) == ("pxe", True), boots[-3:]
    answered = _wait(
        "the boot server's local-disk answer to w1",
        lambda: [
            e for e in _events(remote_events)[before:]
            if e["kind"] == "ipxe.script" and e.get("node") == "w1" and e["outcome"] == "local-disk"
        ],
        timeout=420, every=5,
        explain=lambda: _w1_story(racks_lab, marker, before),
    )  # fmt: skip
    assert answered[0]["data"].get("reason") == "installed"
    after = _wait(
        "w1 back from its disk",
        lambda: (lambda c: c if "standin.boot=disk" in c else None)(_console("w1")[marker:]),
        timeout=420,
        every=5,
        explain=lambda: _w1_story(racks_lab, marker, before),
    )
    said = after.index("is installed, booting from the local disk")
    assert re.search(r'BdsDxe: starting Boot\w+ "UEFI Misc Device"', after[said:])
    assert manifest.read_bytes() == pushed  # no re-push
    _wait(
        "w1 over mutual TLS",
        lambda: json.loads(racks_lab.talos("secure_version", W1_IP)),
        timeout=300,
        every=5,
    )
    racks_lab.tool("netboot", "remote-stop", "--rack", "r2")
