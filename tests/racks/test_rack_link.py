"""A boot server inside `up`: ``RackLink`` against a real sshd on loopback and the real agent.

Events reach the local log while the session is open (no remote-status), node-state changes
reach the agent at once (an installed node boots from disk without a re-push), a killed
session's sshd child is survived with every event merged exactly once, the remote service is
stopped at the end unless kept, and an unreachable boot server is a clear error.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.errors import OperationError
from provisioner.events import EventLog
from provisioner.fsutil import private_dir
from provisioner.inventory import load_inventory
from provisioner.inventory.model import Site
from provisioner.netboot.assets import asset_set
from provisioner.netboot.rack_link import RackLink
from provisioner.state import StateStore

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Server:
    port: int
    host_pub: str
    client_key: Path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("sshd")
    host_pub = " ".join(_keygen(d / "host_key").split()[:2])
    (d / "authorized_keys").write_text(_keygen(d / "client_key") + "\n")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nAllowUsers {getpass.getuser()}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nStrictModes no\nPidFile none\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(d / "sshd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
        yield Server(port, host_pub, d / "client_key")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@dataclass
class Rack:
    site: Site
    store: StateStore
    events: EventLog
    remote: Path
    http_port: int
    assets: Path

    def link(self, **kw: Any) -> RackLink:
        return RackLink(
            self.site,
            "r1",
            self.site.select(("r1",)),
            self.store,
            self.events,
            remote_dir=str(self.remote),
            dhcp=False,
            http_port=self.http_port,
            assets_root=self.assets,
            **kw,
        )

    def get(self, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10, source_address=(source, 0))
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, body

    def local(self) -> list[dict[str, Any]]:
        path = self.site.state_dir / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [e for e in map(json.loads, lines) if (e.get("data") or {}).get("remote")]

    def remote_events(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in (self.remote / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def rack(tmp_path: Path, sshd: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rack]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    inv, state = tmp_path / "inv", tmp_path / "state"
    inv.mkdir()
    bmc = {"protocol": "ipmi", "address": "127.0.0.1", "username": "a", "password": "env:RACK_LINK_TEST_PW"}

    def node(name: str, ip: str, mac: str, rack: str = "r1") -> dict[str, Any]:
        return {
            "name": name,
            "rack": rack,
            "role": "controlplane" if name == "cp1" else "worker",
            "boot": {"mac": mac},
            "ip": ip,
            "bmc": {**bmc, "port": 7000 + int(mac[-1])},
            "data_disks": ["/dev/vdb"],
        }

    doc = {
        "cluster": {"name": "rl", "bundle": "distro-full", "state_dir": str(state)},
        "networks": {
            "management": {"subnet": "127.0.0.0/8", "gateway": "127.0.0.1"},
            "netboot": {"server": "127.0.0.1", "http_port": 8080},
        },
        "racks": [
            {"name": "r0"},
            {
                "name": "r1",
                "boot_server": {
                    "host": "127.0.0.1",
                    "port": sshd.port,
                    "user": getpass.getuser(),
                    "key": str(sshd.client_key),
                },
            },
        ],
        "nodes": [
            node("cp1", "127.0.0.11", "52:54:00:cc:00:01"),
            node("w2", "127.0.0.12", "52:54:00:cc:00:02"),
            node("w0", "127.0.0.10", "52:54:00:cc:00:03", rack="r0"),  # served by the local service
        ],
    }
    (inv / "site.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (inv / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_pub}\n")
    site = load_inventory(inv / "site.yaml").site
    private_dir(state / "configs")
    for n in ("cp1", "w2"):
        (state / "configs" / f"{n}.yaml").write_bytes(b"machine: {token: SECRET-" + n.encode() + b"}\n")
    aset = asset_set(site, tmp_path / "assets")
    aset.directory.mkdir(parents=True)
    (aset.directory / "kernel-amd64").write_bytes(b"K" * 1000)
    (aset.directory / "initramfs-amd64.xz").write_bytes(b"I" * 1000)
    store = StateStore(site.state_dir)
    r = Rack(
        site,
        store,
        EventLog(store.events_path),
        tmp_path / "bs" / "bundle",
        _free_port(),
        tmp_path / "assets",
    )
    try:
        yield r
    finally:
        with_pid = r.remote / "agent.json"
        if with_pid.exists():
            pid = json.loads(with_pid.read_text()).get("pid")
            if pid:
                with_pid.unlink()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _wait(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _follow_pid(remote: Path) -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"follow" in cmd and str(remote).encode() in cmd:
                return int(d.name)
    return None


def test_events_arrive_live_and_installed_nodes_boot_from_disk_without_a_repush(rack: Rack) -> None:
    with rack.link() as link:
        status, _ = rack.get("/node.ipxe?mac=52:54:00:cc:00:01")
        assert status == 200
        live = _wait(
            "the iPXE event in the local log", lambda: [e for e in rack.local() if e["kind"] == "ipxe.script"]
        )
        assert live[0]["node"] == "cp1" and live[0]["data"]["remote"]["rack"] == "r1"
        rack.store.update("cp1", installed=True)  # what the node flow records after the install
        _wait(
            "the installed state on the boot server",
            lambda: b"local disk" in rack.get("/node.ipxe?mac=52:54:00:cc:00:01")[1],
        )
        status, _ = rack.get("/config?uuid=", source="127.0.0.11")
        assert status == 403  # no config for an installed node
        assert (
            b"Talos installer for w2" in rack.get("/node.ipxe?mac=52:54:00:cc:00:02")[1]
        )  # w2 still installs
        assert link.reconnects == 0
    state = json.loads((rack.remote / "agent.json").read_text())
    assert state["state"] == "stopped"  # the rack is done: the remote service is stopped


def test_a_killed_session_is_resumed_with_no_event_lost_or_repeated(rack: Rack) -> None:
    with rack.link(keep=True) as link:
        for _ in range(3):
            rack.get("/node.ipxe?mac=52:54:00:cc:00:01")
        _wait("3 events", lambda: len(rack.local()) >= 3)
        pid = _wait("the follow process", lambda: _follow_pid(rack.remote))
        sshd_child = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(sshd_child, signal.SIGKILL)  # the session's sshd child: the connection drops
        for _ in range(5):  # written on the boot server while the link is down
            rack.get("/node.ipxe?mac=52:54:00:cc:00:02")
        _wait("the link to come back", lambda: link.reconnects >= 1, timeout=30)
        _wait("all 8 events", lambda: len(rack.local()) >= 8, timeout=30)
        time.sleep(1.0)
    remote_ids = [e["id"] for e in rack.remote_events()]
    merged = [e["data"]["remote"]["id"] for e in rack.local()]
    assert merged == remote_ids == list(range(1, 9))  # each once, in order, none missing
    assert json.loads((rack.remote / "agent.json").read_text())["state"] == "running"  # keep=True
    log = map(json.loads, (rack.site.state_dir / "events.jsonl").read_text().splitlines())
    kinds = [e["outcome"] for e in log if e["kind"] == "netboot.remote"]
    assert "dropped" in kinds and kinds.count("connected") >= 2


def _remote_states(rack: Rack) -> dict[str, Any]:
    path = rack.remote / "node-states.json"
    return json.loads(path.read_text()) if path.exists() else {}  # type: ignore[no-any-return]


def test_a_state_recorded_just_before_close_reaches_a_kept_boot_server(rack: Rack) -> None:
    """The run's last state change (a node recorded installed, then ``up`` returns at once) is
    on the boot server when ``close`` returns: a kept boot server then answers it "boot from
    disk". Sent only on the link's next turn, it was lost when the run ended first."""
    with rack.link(keep=True):
        _wait("the follow process", lambda: _follow_pid(rack.remote))
        time.sleep(1.5)  # the link idles in its receive: no turn is due
        rack.store.update("w2", installed=True)
    assert _remote_states(rack).get("w2") == {"installed": True}
    assert b"local disk" in rack.get("/node.ipxe?mac=52:54:00:cc:00:02")[1]
    log = [json.loads(x) for x in (rack.site.state_dir / "events.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in log if e["kind"] == "netboot.remote"] == ["connected"]


def test_a_state_recorded_while_the_link_is_down_is_handed_over_at_close(rack: Rack) -> None:
    """``close`` while the session is down (its sshd child killed, the link backing off): one
    more session carries the states over, and the events written meanwhile are merged too."""
    with rack.link(keep=True) as link:
        pid = _wait("the follow process", lambda: _follow_pid(rack.remote))
        sshd_child = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(sshd_child, signal.SIGKILL)
        _wait("the drop", lambda: link._channel is not None and link._channel.closed)
        rack.get("/node.ipxe?mac=52:54:00:cc:00:01")  # an event while the link is down
        rack.store.update("cp1", installed=True)
    assert _remote_states(rack).get("cp1") == {"installed": True}
    assert b"local disk" in rack.get("/node.ipxe?mac=52:54:00:cc:00:01")[1]
    assert [e["data"]["remote"]["id"] for e in rack.local()] == [1]  # merged by the last session


def _unreachable(site: Site) -> tuple[Site, int]:
    """The site with every boot server moved to a port nothing listens on."""
    dead = _free_port()
    racks = [
        r.model_copy(update={"boot_server": r.boot_server.model_copy(update={"port": dead})})
        if r.boot_server
        else r
        for r in site.racks
    ]
    return site.model_copy(update={"racks": racks}), dead


def test_an_unreachable_boot_server_is_an_error_naming_it(rack: Rack) -> None:
    site, dead = _unreachable(rack.site)
    link = RackLink(site, "r1", site.select(("r1",)), rack.store, rack.events, timeout=3, dhcp=False)
    with pytest.raises(OperationError, match=rf"127\.0\.0\.1:{dead}"):
        link.start()


class _Progress:
    def __init__(self) -> None:
        self.lines: list[tuple[str, ...]] = []

    def stage(self, *args: str) -> None:
        self.lines.append(args)

    def step(self, *args: str) -> None:
        self.lines.append(args)


def test_up_fails_an_unreachable_racks_nodes_with_the_reason_and_keeps_the_others(rack: Rack) -> None:
    from provisioner.pipeline.boot_servers import BootServers
    from provisioner.pipeline.context import RunContext

    site, dead = _unreachable(rack.site)
    ctx = RunContext.for_site(site, _Progress(), nodes=list(site.nodes))
    with BootServers(ctx, list(site.nodes)) as servers:
        assert [n.name for n in ctx.selected] == ["w0"]  # rack r0 goes on
        assert set(servers.failed) == {"r1"} and servers.links == []
    for name in ("cp1", "w2"):
        error = ctx.store.node(name).error or ""
        assert "boot server of rack r1" in error and f"127.0.0.1:{dead}" in error
        assert ctx.outcomes[name].ok is False
    assert ctx.store.node("w0").error is None
