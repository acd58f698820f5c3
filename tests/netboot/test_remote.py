"""`netboot push|remote-status|remote-stop` against a real OpenSSH server on 127.0.0.1.

The "boot server" is this machine: sshd runs from a temp config with a temp host key and
authorized_keys, the bundle goes into a temp directory (``--remote-dir``), the agent
serves HTTP on a free loopback port, DHCP is off (no interface to hand out leases on).
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.cli import main
from provisioner.events import EventLog
from provisioner.fsutil import private_dir
from provisioner.inventory import load_inventory
from provisioner.netboot import dnsmasq, remote
from provisioner.netboot.assets import asset_set
from provisioner.state import StateStore

SSHD = "/usr/sbin/sshd"
CONFIG_TEXT = b"machine: {token: SECRET-cp1-token}\n"
KERNEL = b"K" * 200_000
INITRAMFS = b"I" * 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    host_pub: str  # "ssh-ed25519 AAAA..."
    client_key: Path  # authorized
    other_key: Path  # not authorized

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_pub}\n"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    d = tmp_path_factory.mktemp("sshd")
    host_pub = " ".join(keygen(d / "host_key").split()[:2])
    authorized = keygen(d / "client_key")
    keygen(d / "other_key")
    (d / "authorized_keys").write_text(authorized + "\n")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"AllowUsers {getpass.getuser()}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PidFile none\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(d / "sshd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sshd never answered: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
        yield Sshd(port, host_pub, d / "client_key", d / "other_key")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass
class Env:
    inventory: Path
    remote: Path  # the bundle directory "on the boot server"
    assets: Path
    http_port: int
    state: Path

    def args(self, *extra: str, rack: str = "r1") -> list[str]:
        return ["-i", str(self.inventory), "-o", "json", "netboot", *extra, "--rack", rack]

    def push(self, *extra: str, rack: str = "r1") -> list[str]:
        return [
            *self.args("push", *extra, rack=rack),
            "--remote-dir",
            str(self.remote),
            "--no-dhcp",
            "--http-port",
            str(self.http_port),
            "--assets-dir",
            str(self.assets),
        ]


def _node(name: str, rack: str, ip: str, mac: str, uuid: str | None = None) -> dict[str, Any]:
    n: dict[str, Any] = {
        "name": name,
        "rack": rack,
        "role": "controlplane",
        "boot": {"mac": mac},
        "ip": ip,
        "data_disks": ["/dev/vdb"],
        "bmc": {
            "protocol": "ipmi",
            "address": "127.0.0.1",
            "port": 7000 + int(mac[-1]),
            "username": "admin",
            "password": "env:REMOTE_TEST_BMC_PASSWORD",
        },
    }
    if uuid:
        n["uuid"] = uuid
    return n


def make_env(tmp_path: Path, sshd: Sshd, key: Path | str, trusted: bool = True) -> Env:
    inv = tmp_path / "inv"
    inv.mkdir()
    state = tmp_path / "state"
    doc = {
        "cluster": {"name": "rt", "bundle": "distro-full", "state_dir": str(state)},
        "networks": {
            "management": {"subnet": "127.0.0.0/8", "gateway": "127.0.0.1"},
            "netboot": {"server": "127.0.0.1", "http_port": 8080},
        },
        "racks": [
            {
                "name": "r1",
                "boot_server": {
                    "host": "127.0.0.1",
                    "port": sshd.port,
                    "user": getpass.getuser(),
                    "key": str(key),
                },
            },
            {"name": "r2"},
        ],
        "nodes": [
            _node("cp1", "r1", "127.0.0.11", "52:54:00:bb:00:01", "7ab0c7b2-0c1d-4a4e-9d1a-0000000000b1"),
            _node("cp2", "r1", "127.0.0.12", "52:54:00:bb:00:02"),
            _node("cp3", "r2", "127.0.0.13", "52:54:00:bb:00:03"),
        ],
    }
    (inv / "site.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    if trusted:
        (inv / "known_hosts").write_text(sshd.known_hosts_line)
    site = load_inventory(inv / "site.yaml").site
    private_dir(state / "configs")
    (state / "configs" / "cp1.yaml").write_bytes(CONFIG_TEXT)
    (state / "configs" / "cp2.yaml").write_bytes(b"machine: {token: SECRET-cp2-token}\n")
    StateStore(site.state_dir).update("cp2", installed=True)  # boots from disk: no config shipped
    aset = asset_set(site, tmp_path / "assets")
    aset.directory.mkdir(parents=True)
    (aset.directory / "kernel-amd64").write_bytes(KERNEL)
    (aset.directory / "initramfs-amd64.xz").write_bytes(INITRAMFS)
    return Env(
        inv / "site.yaml", tmp_path / "boot-server" / "bundle", tmp_path / "assets", free_port(), state
    )


def _kill_agent(remote_dir: Path) -> None:
    try:
        pid = json.loads((remote_dir / "agent.json").read_text()).get("pid")
    except (OSError, ValueError):
        return
    if pid and _running(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def env(tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ssh/known_hosts of the real user
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    e = make_env(tmp_path, sshd, sshd.client_key)
    try:
        yield e
    finally:
        _kill_agent(e.remote)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait a moment for its reaper)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, Any, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    try:
        data = json.loads(out) if out.strip() else None
    except ValueError:
        data = out
    return rc, data, err


def _get(port: int, path: str, source: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
    )
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_push_serve_status_and_stop(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    rc, first, err = _run(capsys, env.push())
    assert rc == 0, err
    root = env.remote
    # --- the bundle landed, private
    assert _mode(root) == 0o700
    for sub in ("configs", "assets", "run"):
        assert _mode(root / sub) == 0o700
    assert (root / "configs" / "cp1.yaml").read_bytes() == CONFIG_TEXT
    assert _mode(root / "configs" / "cp1.yaml") == 0o600
    assert not (root / "configs" / "cp2.yaml").exists()  # installed: its config stays home
    for name in ("manifest.json", "agent.zip", "assets/kernel-amd64", "assets/initramfs-amd64.xz"):
        assert _mode(root / name) == 0o600, name
    assert _mode(root / "netboot.sh") == 0o700
    assert (root / "assets" / "kernel-amd64").read_bytes() == KERNEL
    manifest = json.loads((root / "manifest.json").read_text())
    assert {n["name"] for n in manifest["nodes"]} == {"cp1", "cp2"}  # only rack r1
    assert "SECRET" not in (root / "manifest.json").read_text()
    assert {"assets/kernel-amd64", "assets/initramfs-amd64.xz", "agent.zip"} <= set(first["uploaded"])
    assert first["nodes"] == {"cp1": "install", "cp2": "local-disk"}
    assert "SECRET" not in json.dumps(first) + err
    # --- the remote HTTP server answers like the local one
    port = env.http_port
    status, body = _get(port, "/boot.ipxe")
    assert status == 200 and body.startswith(b"#!ipxe") and f":{port}/node.ipxe".encode() in body
    status, body = _get(port, "/node.ipxe?mac=52-54-00-bb-00-01&uuid=${uuid}")
    assert status == 200
    assert f"kernel http://127.0.0.1:{port}/assets/kernel-amd64".encode() in body
    assert b"talos.config=" in body
    status, body = _get(port, "/node.ipxe?mac=52-54-00-bb-00-02")
    assert status == 200 and b"installed, booting from the local disk" in body
    assert _get(port, "/node.ipxe?mac=52-54-00-bb-00-03")[0] == 404  # rack r2 is not served here
    uuid = "7ab0c7b2-0c1d-4a4e-9d1a-0000000000b1"
    assert _get(port, f"/config?uuid={uuid}", source="127.0.0.11") == (200, CONFIG_TEXT)
    assert _get(port, f"/config?uuid={uuid}", source="127.0.0.1")[0] == 403
    assert _get(port, "/assets/kernel-amd64") == (200, KERNEL)
    # --- remote events come home
    rc, st, err = _run(capsys, env.args("remote-status", "--remote-dir", str(env.remote)))
    assert rc == 0, err
    assert st["running"] is True and st["state"] == "running" and st["events_merged"] >= 6
    local = EventLog(env.state / "events.jsonl").read()
    scripts = [e for e in local if e.kind == "ipxe.script" and e.node == "cp1"]
    assert scripts and scripts[0].outcome == "install"
    assert scripts[0].data["remote"]["rack"] == "r1" and scripts[0].data["mac"] == "52:54:00:bb:00:01"
    assert any(e.kind == "config.fetch" and e.node == "cp1" and e.outcome == "ok" for e in local)
    assert any(e.kind == "config.denied" and e.outcome == "denied" for e in local)
    rc, again, _ = _run(capsys, env.args("remote-status", "--remote-dir", str(env.remote)))
    assert rc == 0 and again["events_merged"] == 0  # nothing merged twice
    # --- a second push re-uploads no unchanged asset
    mtimes = {n: (root / n).stat().st_mtime_ns for n in ("assets/kernel-amd64", "assets/initramfs-amd64.xz")}
    rc, second, err = _run(capsys, env.push())
    assert rc == 0, err
    assert {"assets/kernel-amd64", "assets/initramfs-amd64.xz", "agent.zip"} <= set(second["unchanged"])
    assert not any(u.startswith("assets/") for u in second["uploaded"])
    assert {n: (root / n).stat().st_mtime_ns for n in mtimes} == mtimes
    assert not _running(first["agent_pid"])  # the old agent was replaced
    assert _get(port, "/boot.ipxe")[0] == 200
    # --- stop leaves no process behind
    pid = second["agent_pid"]
    assert _running(pid)
    rc, stopped, err = _run(capsys, env.args("remote-stop", "--remote-dir", str(env.remote)))
    assert rc == 0, err
    assert stopped["state"] == "stopped"
    assert not _running(pid)
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(root).encode() in (proc / "cmdline").read_bytes() and _running(int(proc.name)):
                    leftovers.append(proc.name)
            except OSError:
                continue
    assert leftovers == []
    with pytest.raises(OSError):
        _get(port, "/boot.ipxe")
    rc, st, _ = _run(capsys, env.args("remote-status", "--remote-dir", str(env.remote)))
    assert rc == 0 and st["running"] is False and st["state"] == "stopped"


def test_unknown_host_key_needs_explicit_acceptance(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    e = make_env(tmp_path, sshd, sshd.client_key, trusted=False)
    try:
        rc, _, err = _run(capsys, e.push())
        assert rc == 1
        assert f"127.0.0.1:{sshd.port}" in err and "host key" in err and "--accept-new-host-key" in err
        assert "SHA256:" in err
        assert not e.remote.exists()  # nothing was uploaded
        assert not (e.inventory.parent / "known_hosts").exists()
        rc, _, err = _run(capsys, e.push("--accept-new-host-key"))
        assert rc == 0, err
        recorded = (e.inventory.parent / "known_hosts").read_text()
        assert recorded.split() == sshd.known_hosts_line.split()
        rc, _, err = _run(capsys, e.args("remote-status", "--remote-dir", str(e.remote)))  # now known
        assert rc == 0, err
        # a different key for the same host is refused even with the flag
        (e.inventory.parent / "known_hosts").write_text(
            f"[127.0.0.1]:{sshd.port} "
            + " ".join((sshd.other_key.with_suffix(".pub")).read_text().split()[:2])
        )
        rc, _, err = _run(
            capsys, e.args("remote-stop", "--remote-dir", str(e.remote), "--accept-new-host-key")
        )
        assert rc == 1 and "CHANGED" in err
        (e.inventory.parent / "known_hosts").write_text(sshd.known_hosts_line)
        assert _run(capsys, e.args("remote-stop", "--remote-dir", str(e.remote)))[0] == 0
    finally:
        _kill_agent(e.remote)


def test_bad_key_exits_1_with_host_and_reason(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    e = make_env(tmp_path, sshd, sshd.other_key)
    rc, _, err = _run(capsys, e.push())
    assert rc == 1
    assert f"{getpass.getuser()}@127.0.0.1:{sshd.port}" in err and "authentication failed" in err
    assert str(sshd.other_key) in err
    assert not e.remote.exists()


def test_missing_key_file_exits_2(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    e = make_env(tmp_path, sshd, "keys/nope")  # relative: resolved against the inventory directory
    rc, _, err = _run(capsys, e.push())
    assert rc == 2 and str(e.inventory.parent / "keys" / "nope") in err


def test_rack_without_boot_server_or_unknown_exits_2(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, env.push(rack="r2"))
    assert rc == 2 and "rack r2 has no boot_server" in err
    rc, _, err = _run(capsys, env.args("remote-status", rack="r9"))
    assert rc == 2 and "no such rack" in err
    rc, _, err = _run(capsys, ["-i", str(env.inventory), "netboot", "remote-stop"])
    assert rc == 2 and "--rack" in err
    assert not env.remote.exists()


def test_bundle_with_dhcp_renders_a_tested_rack_only_dnsmasq_config(env: Env, tmp_path: Path) -> None:
    site = load_inventory(env.inventory).site
    root = tmp_path / "remote-root"
    bundle = remote.build_bundle(
        site,
        "r1",
        site.select(("r1",)),
        StateStore(site.state_dir),
        root=str(root),
        python="/usr/bin/python3",
        server="127.0.0.1",
        http_port=9999,
        interface="lo",
        dhcp=True,
        assets_root=env.assets,
    )
    conf = bundle.files["run/dnsmasq.conf"][0].decode()
    assert "dhcp-host=52:54:00:bb:00:01,127.0.0.11,cp1" in conf
    assert "dhcp-host=52:54:00:bb:00:02,127.0.0.12,cp2" in conf
    assert "52:54:00:bb:00:03" not in conf  # rack r2's node
    assert f"dhcp-script={root}/run/leasehook.sh" in conf
    assert "dhcp-boot=tag:ipxe,http://127.0.0.1:9999/boot.ipxe" in conf
    hook = bundle.files["run/leasehook.sh"][0].decode()
    assert f"{root}/events.jsonl" in hook and f"{root}/agent.zip" in hook
    assert json.loads(bundle.files["run/nodes.json"][0]) == {
        "52:54:00:bb:00:01": "cp1",
        "52:54:00:bb:00:02": "cp2",
    }
    private_dir(root / "run")
    dnsmasq.check(conf, dnsmasq.Paths(root / "run"))  # what the agent runs before starting dnsmasq


def test_agent_zip_needs_nothing_outside_the_stdlib(tmp_path: Path) -> None:
    """The boot server gets no PyPI package: the agent and lease hook import from the zip
    alone, with site-packages disabled (-S)."""
    zip_path = tmp_path / "agent.zip"
    zip_path.write_bytes(remote.agent_zip())
    assert remote.agent_zip() == zip_path.read_bytes()  # deterministic: re-pushes skip it
    res = subprocess.run(
        [
            "/usr/bin/python3",
            "-S",
            "-c",
            "import provisioner.netboot.remote_agent, provisioner.netboot.leasehook, sys;"
            "print(provisioner.netboot.remote_agent.__file__)",
        ],
        env={"PYTHONPATH": str(zip_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(str(zip_path))
