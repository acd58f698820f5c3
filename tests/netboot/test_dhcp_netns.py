"""Acceptance: the rendered dnsmasq, really running in a namespace of its own, serves a
DHCP client in a second namespace over a veth pair.

The client is busybox ``udhcpc`` (an independent implementation) sending option 93
(client architecture) and, for the iPXE case, user class ``iPXE``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from netboot_netns import Pair, netns_pair, set_client_mac
from netboot_sites import make_site

from provisioner.events import DHCP_LEASE, EventLog
from provisioner.netboot import dnsmasq

pytestmark = pytest.mark.netns

SERVER = "10.231.0.1"
NODE_MAC = "52:54:00:aa:00:01"
NODE_IP = "10.231.0.11"
UEFI_MAC = "52:54:00:aa:00:02"
UEFI_IP = "10.231.0.12"
UNKNOWN_MAC = "52:54:00:ee:ee:ee"


def _site(tmp_path: Path, interface: str):
    nodes = [
        {
            "name": "bios1",
            "rack": "r1",
            "role": "controlplane",
            "boot": {"mode": "bios", "mac": NODE_MAC},
            "ip": NODE_IP,
        },
        {
            "name": "uefi1",
            "rack": "r1",
            "role": "controlplane",
            "boot": {"mode": "uefi", "mac": UEFI_MAC},
            "ip": UEFI_IP,
        },
    ]
    return make_site(
        tmp_path / "state",
        server=SERVER,
        subnet="10.231.0.0/24",
        gateway=SERVER,
        nodes=nodes,
        interface=interface,
    )


def _udhcpc(pair: Pair, tmp_path: Path, arch: str, user_class: str | None = None) -> dict[str, str] | None:
    """One DHCP exchange; the env udhcpc gives its script on ``bound``, or None (no lease)."""
    out = tmp_path / f"lease-{arch}-{user_class}.env"
    out.unlink(missing_ok=True)
    script = tmp_path / "udhcpc.sh"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    argv = [
        "busybox",
        "udhcpc",
        "-f",
        "-q",
        "-n",
        "-t",
        "3",
        "-T",
        "1",
        "-A",
        "1",
        "-i",
        pair.client_if,
        "-s",
        str(script),
        "-V",
        f"PXEClient:Arch:{int(arch, 16):05d}:UNDI:002001",
        "-x",
        f"0x5d:{arch}",
    ]
    if user_class:
        argv += ["-x", f"0x4d:{user_class.encode().hex()}"]
    pair.client(*argv, check=False, timeout=30)
    if not out.exists():
        return None
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


@pytest.fixture
def served(tmp_path: Path):
    with netns_pair(f"{SERVER}/24", NODE_MAC) as pair:
        site = _site(tmp_path, pair.server_if)
        paths = dnsmasq.Paths(tmp_path / "runtime")
        events = EventLog(site.state_dir / "events.jsonl")
        dnsmasq.write_files(site, paths, events.path)
        proc = dnsmasq.Dnsmasq(paths, prefix=["ip", "netns", "exec", pair.server_ns])
        proc.start()
        try:
            yield pair, events, paths
        finally:
            proc.stop()


def test_bios_client_gets_reservation_and_undionly(served, tmp_path: Path) -> None:
    pair, events, _ = served
    lease = _udhcpc(pair, tmp_path, "0000")
    assert lease is not None, "no lease for a reserved MAC"
    assert lease["ip"] == NODE_IP
    assert lease["boot_file"] == "undionly.kpxe"
    assert lease["siaddr"] == SERVER
    ev = events.wait_for(lambda e: e.kind == DHCP_LEASE and e.node == "bios1", timeout=15)
    assert ev is not None, "the lease hook wrote no event"
    assert ev.data["mac"] == NODE_MAC and ev.data["ip"] == NODE_IP and ev.data["action"] in ("add", "old")
    assert "bios" in ev.data["tags"]


@pytest.mark.parametrize("arch", ["0007", "0009"])
def test_uefi_client_gets_snponly(served, tmp_path: Path, arch: str) -> None:
    pair, _, _ = served
    set_client_mac(pair, UEFI_MAC)
    lease = _udhcpc(pair, tmp_path, arch)
    assert lease is not None
    assert lease["ip"] == UEFI_IP
    assert lease["boot_file"] == "snponly.efi"


def test_ipxe_client_is_chained_to_http(served, tmp_path: Path) -> None:
    pair, _, _ = served
    lease = _udhcpc(pair, tmp_path, "0000", user_class="iPXE")
    assert lease is not None
    assert lease["boot_file"] == f"http://{SERVER}:8080/boot.ipxe"


def test_unknown_mac_gets_no_offer(served, tmp_path: Path) -> None:
    pair, _, paths = served
    set_client_mac(pair, UNKNOWN_MAC)
    assert _udhcpc(pair, tmp_path, "0000") is None
    # dnsmasq did see the request (so "no offer" is its decision, not a broken link)
    assert UNKNOWN_MAC in paths.log.read_text()


def test_tftp_serves_the_ipxe_binary(served, tmp_path: Path) -> None:
    pair, _, _ = served
    pair.client("ip", "addr", "add", f"{NODE_IP}/24", "dev", pair.client_if)
    got = tmp_path / "undionly.kpxe"
    pair.client("busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", str(got), SERVER, timeout=30)
    assert got.read_bytes() == (dnsmasq.IPXE_DIR / "undionly.kpxe").read_bytes()


def test_dnsmasq_dies_with_its_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: killing the process that started dnsmasq takes dnsmasq down."""
    import signal
    import subprocess
    import sys
    import time

    with netns_pair(f"{SERVER}/24", NODE_MAC) as pair:
        site = _site(tmp_path, pair.server_if)
        paths = dnsmasq.Paths(tmp_path / "runtime")
        dnsmasq.write_files(site, paths, tmp_path / "events.jsonl")
        code = (
            "import sys,time; from pathlib import Path; from provisioner.netboot import dnsmasq as d;"
            f"p=d.Dnsmasq(d.Paths(Path({str(paths.runtime)!r})),"
            f" prefix=['ip','netns','exec',{pair.server_ns!r}]);"
            "p.start(); print(p.pid, flush=True); time.sleep(60)"
        )
        parent = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        try:
            assert parent.stdout is not None
            guard = int(parent.stdout.readline())
            deadline = time.monotonic() + 10
            while not paths.pid.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            daemon = int(paths.pid.read_text())
            assert Path(f"/proc/{daemon}/comm").read_text().strip() == "dnsmasq"
            parent.send_signal(signal.SIGKILL)
            parent.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (_alive(guard) or _alive(daemon)):
                time.sleep(0.1)
            survivors = [p for p in (guard, daemon) if _alive(p)]
            for p in survivors:
                os.kill(p, signal.SIGKILL)
            assert not survivors, "dnsmasq (or its guard) outlived the process that started it"
        finally:
            if parent.poll() is None:
                parent.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # an unreaped zombie has already exited


def test_serve_end_to_end_in_namespace(tmp_path: Path) -> None:
    """`provisioner netboot serve` inside the server namespace: a client in the other
    namespace gets its lease with the iPXE chain URL, its boot script, its per-node install
    script and its machine config; SIGTERM stops dnsmasq too."""
    import signal
    import subprocess
    import sys
    import time

    from netboot_sites import write_inventory

    from provisioner.events import CONFIG_FETCH, IPXE_SCRIPT

    cli = str(Path(sys.executable).parent / "provisioner")
    port = 8089
    with netns_pair(f"{SERVER}/24", NODE_MAC) as pair:
        inv = write_inventory(
            tmp_path / "inv",
            SERVER,
            "10.231.0.0/24",
            SERVER,
            [
                {
                    "name": "bios1",
                    "rack": "r1",
                    "role": "controlplane",
                    "boot": {"mode": "bios", "mac": NODE_MAC},
                    "uuid": "7ab0c7b2-0c1d-4a4e-9d1a-0000000000aa",
                    "ip": NODE_IP,
                }
            ],
            port,
            pair.server_if,
        )
        k, i = tmp_path / "k", tmp_path / "i"
        k.write_bytes(b"kernel")
        i.write_bytes(b"initrd")
        assets_dir = str(tmp_path / "assets")
        subprocess.run(
            [
                cli,
                "-i",
                str(inv),
                "assets",
                "import",
                "--kernel",
                str(k),
                "--initramfs",
                str(i),
                "--assets-dir",
                assets_dir,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        state = tmp_path / "inv" / "state"
        (state / "configs").mkdir(parents=True, exist_ok=True)
        (state / "configs" / "bios1.yaml").write_text("machine: {type: controlplane}\n")
        serve = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                pair.server_ns,
                cli,
                "-i",
                str(inv),
                "netboot",
                "serve",
                "--assets-dir",
                assets_dir,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pidfile = state / "netboot" / "dnsmasq.pid"
        try:
            deadline = time.monotonic() + 20
            while not pidfile.exists() and time.monotonic() < deadline and serve.poll() is None:
                time.sleep(0.1)
            assert pidfile.exists(), (
                serve.communicate(timeout=5)[1] if serve.poll() is not None else "no dnsmasq"
            )
            daemon = int(pidfile.read_text())
            lease = _udhcpc(pair, tmp_path, "0000", user_class="iPXE")
            assert lease is not None and lease["ip"] == NODE_IP
            boot_url = lease["boot_file"]
            assert boot_url == f"http://{SERVER}:{port}/boot.ipxe"
            pair.client("ip", "addr", "add", f"{NODE_IP}/24", "dev", pair.client_if)
            script = pair.client("busybox", "wget", "-q", "-O", "-", boot_url).stdout
            assert "node.ipxe?uuid=${uuid}&mac=${mac:hexhyp}" in script
            node = pair.client(
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
                f"http://{SERVER}:{port}/node.ipxe?uuid=&mac=52-54-00-aa-00-01&serial=",
            ).stdout
            assert f"kernel http://{SERVER}:{port}/assets/kernel-amd64 talos.platform=metal" in node
            kernel = pair.client(
                "busybox", "wget", "-q", "-O", "-", f"http://{SERVER}:{port}/assets/kernel-amd64"
            )
            assert kernel.stdout == "kernel"
            config = pair.client(
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
                f"http://{SERVER}:{port}/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-0000000000aa",
            ).stdout
            assert config == "machine: {type: controlplane}\n"
            log = EventLog(state / "events.jsonl")
            kinds = {(e.kind, e.node, e.outcome) for e in log.read()}
            assert (IPXE_SCRIPT, "bios1", "install") in kinds
            assert (CONFIG_FETCH, "bios1", "ok") in kinds
            assert log.wait_for(lambda e: e.kind == DHCP_LEASE and e.node == "bios1", timeout=10) is not None
            serve.send_signal(signal.SIGTERM)
            _, err = serve.communicate(timeout=20)
            assert serve.returncode == 0, err
            assert not _alive(daemon), "dnsmasq survived the service"
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.communicate()


def test_proxy_answers_reach_the_event_log(tmp_path: Path) -> None:
    """The service in proxy-DHCP mode: the real dnsmasq answers a UEFI PXE client with the boot
    file only (no lease, so no lease hook), and the answer still becomes a ``dhcp.proxy``
    event naming the node."""
    from provisioner.events import DHCP_PROXY
    from provisioner.netboot.service import NetbootService
    from provisioner.state import StateStore

    with netns_pair(f"{SERVER}/24", UEFI_MAC) as pair:
        site = make_site(
            tmp_path / "state",
            server=SERVER,
            subnet="10.231.0.0/24",
            gateway=SERVER,
            nodes=_site(tmp_path, pair.server_if).model_dump(mode="json")["nodes"],
            interface=pair.server_if,
            dhcp={"mode": "proxy"},
        )
        events = EventLog(site.state_dir / "events.jsonl")
        service = NetbootService(
            site,
            StateStore(site.state_dir),
            events,
            runtime_dir=tmp_path / "runtime",
            http_host="127.0.0.1",
            http_port=0,
            dnsmasq_prefix=["ip", "netns", "exec", pair.server_ns],
        )
        with service:
            assert _udhcpc(pair, tmp_path, "0007") is None  # no address from a proxy
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not [e for e in events.iter() if e.kind == DHCP_PROXY]:
                time.sleep(0.2)
        proxied = [e for e in events.iter() if e.kind == DHCP_PROXY]
        # udhcpc stops at the DISCOVER: the firmware's answer is the PXE menu (its file would
        # come from the boot-server step on port 4011).
        assert [(e.node, e.data["mac"], e.data["arch"], e.data["menu"]) for e in proxied[:1]] == [
            ("uefi1", UEFI_MAC, 7, True)
        ]
        assert not [e for e in events.iter() if e.kind == DHCP_LEASE]
