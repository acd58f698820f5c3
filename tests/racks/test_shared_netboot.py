"""Concurrent runs share the site's netboot service: the first starts it, later ones attach
(and are served as soon as they are registered), it stops when the last leaves. Real
processes, a real HTTP port on loopback; DHCP off (no network namespace needed)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.fsutil import locked
from provisioner.inventory import load_inventory
from provisioner.netboot.assets import asset_set

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import sys, time
from pathlib import Path
from provisioner.fsutil import locked
from provisioner.inventory import load_inventory
from provisioner.netboot.shared import SharedNetboot
inv, rack, port, assets, go = sys.argv[1:6]
site = load_inventory(Path(inv)).site
with SharedNetboot(site, site.select((rack,)), http_port=int(port), dhcp=False, assets_root=assets):
    print("in", flush=True)
    while not Path(go).exists():
        time.sleep(0.1)
print("out", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _site(tmp_path: Path, port: int) -> Path:
    def node(name: str, rack: str, ip: str, mac: str, role: str) -> dict[str, Any]:
        bmc = {"protocol": "ipmi", "address": "127.0.0.1", "port": 7100 + int(mac[-1]), "username": "a",
               "password": "env:SHARED_NETBOOT_TEST_PW"}  # fmt: skip
        return {
            "name": name,
            "rack": rack,
            "role": role,
            "boot": {"mac": mac},
            "ip": ip,
            "bmc": bmc,
            "data_disks": ["/dev/vdb"],
        }

    doc = {
        "cluster": {"name": "sh", "bundle": "distro-full", "state_dir": str(tmp_path / "state")},
        "networks": {
            "management": {"subnet": "127.0.0.0/8", "gateway": "127.0.0.1"},
            "netboot": {"server": "127.0.0.1", "http_port": port},
        },
        "racks": [{"name": "r1"}, {"name": "r2"}],
        "nodes": [
            node("cp1", "r1", "127.0.0.11", "52:54:00:dd:00:01", "controlplane"),
            node("w1", "r2", "127.0.0.21", "52:54:00:dd:00:02", "worker"),
        ],
    }
    inv = tmp_path / "site.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    aset = asset_set(load_inventory(inv).site, tmp_path / "assets")
    aset.directory.mkdir(parents=True)
    (aset.directory / "kernel-amd64").write_bytes(b"K" * 100)
    (aset.directory / "initramfs-amd64.xz").write_bytes(b"I" * 100)
    return inv


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _registry(tmp_path: Path) -> dict[str, Any]:
    """The registry as a run reads it: under its lock. The daemon frees the port, then clears itself
    from the registry, both under the lock; read without it, the moment between the two shows a
    daemon that no run would ever see."""
    netboot = tmp_path / "state" / "netboot"
    with locked(netboot / "shared.lock", exclusive=False):
        return json.loads((netboot / "shared.json").read_text())  # type: ignore[no-any-return]


def test_two_runs_share_one_service_which_stops_when_the_last_leaves(tmp_path: Path) -> None:
    port = _free_port()
    inv = _site(tmp_path, port)
    go = {r: tmp_path / f"go-{r}" for r in ("r1", "r2")}
    procs = {}
    for rack in ("r1", "r2"):
        procs[rack] = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(inv), rack, str(port), str(tmp_path / "assets"), str(go[rack])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
    try:
        for rack, p in procs.items():
            assert p.stdout is not None
            line = p.stdout.readline().decode().strip()
            assert line == "in", (
                f"run {rack}: {line!r} {p.stderr.read().decode() if p.poll() is not None else ''}"
            )
        reg = _registry(tmp_path)
        assert sorted(reg["users"]) == sorted(str(p.pid) for p in procs.values())
        assert reg["served"] == ["cp1", "w1"]  # one service, both runs' nodes
        for mac, name in (("52:54:00:dd:00:01", "cp1"), ("52:54:00:dd:00:02", "w1")):
            status, body = _get(port, f"/node.ipxe?mac={mac}")
            assert status == 200 and f"Talos installer for {name}".encode() in body
        daemon = reg["daemon"]
        go["r1"].touch()  # the first run leaves: the service stays for the second
        assert procs["r1"].wait(20) == 0
        time.sleep(2)
        assert _get(port, "/boot.ipxe")[0] == 200 and _registry(tmp_path)["daemon"] == daemon
        procs["r2"].send_signal(signal.SIGKILL)  # the last run dies: it counts as gone
        procs["r2"].wait(10)
        deadline = time.monotonic() + 20
        while not _port_free(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _port_free(port), "the shared service outlived its last run"
        assert _registry(tmp_path)["daemon"] is None
        with pytest.raises(ProcessLookupError):
            for _ in range(50):
                os.kill(daemon, 0)
                time.sleep(0.1)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_warmed_daemon_waits_unbound_and_serves_once_the_run_enters(tmp_path: Path) -> None:
    """``warm`` starts the daemon before the run has nodes to serve (``up`` does so before its first
    stage): it loads but binds nothing; entering then registers the nodes and the already running
    daemon serves them; leaving stops it."""
    from provisioner.netboot.shared import SharedNetboot

    port = _free_port()
    site = load_inventory(_site(tmp_path, port)).site
    member = SharedNetboot(site, site.nodes, http_port=port, dhcp=False, assets_root=str(tmp_path / "assets"))
    member.warm()
    try:
        reg = _registry(tmp_path)
        daemon = reg["daemon"]
        assert reg["users"] == {str(os.getpid()): []} and daemon is not None
        time.sleep(1.5)  # past the daemon's idle stop: a registered run with no nodes keeps it
        assert _port_free(port) and _registry(tmp_path)["daemon"] == daemon
        with member:
            assert _registry(tmp_path)["daemon"] == daemon  # the warmed daemon, not a second one
            status, body = _get(port, "/node.ipxe?mac=52:54:00:dd:00:02")
            assert status == 200 and b"Talos installer for w1" in body
    finally:
        member.leave()
    deadline = time.monotonic() + 10
    while _registry(tmp_path)["daemon"] is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _registry(tmp_path)["daemon"] is None and _port_free(port)
