"""No new secrets for a site whose nodes are installed under another CA (issue 13).

A run that finds no secrets in its state directory while inventory nodes answer the Talos API with
mutual TLS (an installed node, whose CA is not here) refuses to generate secrets: exit 2, the state
directory and those nodes named, nothing written. Maintenance-mode and unreachable nodes are a new
site and pass. The nodes are the lab's real Talos stand-in apid (``provisioner.lab.standin.apid``)
on loopback addresses, on the real port 50000.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from provisioner.cli import main
from provisioner.inventory import load_inventory
from provisioner.lab.standin import apid
from provisioner.talos import pki
from provisioner.talosapi.probe import TALOS_API_PORT, probe, probe_all

pytestmark = pytest.mark.timeout(120)

NET = "127.113.13"  # loopback addresses of this test only: every node's apid on the real port
NODES = {"cp1": 11, "cp2": 12, "cp3": 13, "w1": 14}


class NodeDouble:
    """What the stand-in's apid asks of the machine behind it; the probe makes no RPC at all."""

    def __init__(self, name: str) -> None:
        self.name = name

    def hostname(self) -> str:
        return self.name


@contextlib.contextmanager
def talos_nodes(modes: dict[str, str], ca: pki.KeyPair) -> Iterator[None]:
    """Real apid servers on ``NET.<n>:50000``: ``maintenance`` or ``installed`` (mutual TLS, ``ca``)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[apid.RunningServer] = []
    try:
        for name, mode in modes.items():
            ip = f"{NET}.{NODES[name]}"
            if mode == "maintenance":
                coro = apid.serve_maintenance(ip, TALOS_API_PORT, NodeDouble(name))
            else:
                assert ca.crt is not None
                coro = apid.serve_configured(ip, TALOS_API_PORT, NodeDouble(name), ca.crt, ca.key, [ip])
            servers.append(asyncio.run_coroutine_threadsafe(coro, loop).result(20))
        yield
    finally:
        for server in servers:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def other_ca() -> pki.KeyPair:
    """The OS CA of the site as it was installed: its secrets are not in the state directory."""
    return pki.new_ca("talos", "ed25519")


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    doc = {
        "cluster": {"name": "elsewhere", "bundle": "distro-full", "state_dir": "state"},
        "networks": {
            "management": {"subnet": f"{NET}.0/24", "gateway": f"{NET}.1", "vip": f"{NET}.10"},
            "metallb": {"range": f"{NET}.100-{NET}.110"},
            "netboot": {"server": f"{NET}.1"},
        },
        "nodes": [
            {
                "name": name,
                "rack": "r1",
                "role": "worker" if name == "w1" else "controlplane",
                "bmc": {
                    "protocol": "ipmi",
                    "address": f"{NET}.{100 + i}",
                    "username": "a",
                    "password": "env:X",
                },
                "boot": {"mac": f"52:54:00:13:00:{i:02x}"},
                "ip": f"{NET}.{i}",
                "data_disks": ["/dev/sdb"],
            }
            for name, i in NODES.items()
        ],
    }
    path = tmp_path / "inv" / "site.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _state(inventory: Path) -> Path:
    return inventory.parent / "state"


def test_the_probe_tells_installed_from_maintenance_from_nothing(other_ca: pki.KeyPair) -> None:
    with talos_nodes({"cp1": "maintenance", "cp2": "installed"}, other_ca):
        maintenance, installed, nothing = probe_all(f"{NET}.{NODES[n]}" for n in ("cp1", "cp2", "cp3"))
    assert (maintenance.mode, maintenance.issuer) == ("maintenance", "CN=cp1")  # self-signed
    assert installed.mode == "installed" and installed.detail == "requires a client certificate"
    assert installed.issuer == "O=talos"  # the OS CA's subject, as Talos's
    assert nothing.mode == "unreachable"
    assert probe(f"{NET}.{NODES['w1']}", timeout=0.5).mode == "unreachable"


def test_a_silent_listener_costs_the_timeout_not_the_run() -> None:
    """Something accepts on :50000 and never speaks TLS: the probe gives up after its timeout."""
    with socket.create_server((f"{NET}.{NODES['w1']}", TALOS_API_PORT)) as server:
        started = time.monotonic()
        answer = probe(f"{NET}.{NODES['w1']}", timeout=0.5)
        assert time.monotonic() - started < 2.0
        server.accept()[0].close()
    assert answer.mode == "other"


@pytest.mark.parametrize(
    "command", [["secrets", "generate"], ["configs", "generate"], ["up", "--progress", "lines"]]
)
def test_no_new_secrets_when_a_node_is_installed_under_another_ca(
    inventory: Path, other_ca: pki.KeyPair, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with talos_nodes({"cp1": "maintenance", "cp2": "installed"}, other_ca):
        assert main(["-i", str(inventory), *command]) == 2
    err = capsys.readouterr().err
    assert f"state directory {_state(inventory)}" in err
    assert f"cp2 ({NET}.12:50000, certificate issued by O=talos)" in err
    assert "cp1" not in err.split("CA that is not there:")[1]  # maintenance mode: a new machine
    assert "--ignore-installed-nodes" in err and "secrets generate --from" in err
    assert "Traceback" not in err and "internal error" not in err
    assert not (_state(inventory) / "secrets.yaml").exists()
    assert not list(_state(inventory).glob("configs/*"))


def test_maintenance_and_unreachable_nodes_are_a_new_site(inventory: Path, other_ca: pki.KeyPair) -> None:
    with talos_nodes({"cp1": "maintenance", "w1": "maintenance"}, other_ca):
        assert main(["-i", str(inventory), "secrets", "generate"]) == 0
    assert (_state(inventory) / "secrets.yaml").stat().st_mode & 0o777 == 0o600


def test_secrets_that_exist_are_used_without_asking_the_nodes(inventory: Path, other_ca: pki.KeyPair) -> None:
    assert main(["-i", str(inventory), "secrets", "generate"]) == 0  # nothing answers: a new site
    before = (_state(inventory) / "secrets.yaml").read_bytes()
    with talos_nodes({"cp2": "installed"}, other_ca):  # installed since, under these secrets or not
        assert main(["-i", str(inventory), "configs", "generate"]) == 0
    assert (_state(inventory) / "secrets.yaml").read_bytes() == before


def test_the_operator_can_start_over_explicitly_and_it_is_logged(
    inventory: Path, other_ca: pki.KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    with talos_nodes({"cp2": "installed", "cp3": "installed"}, other_ca), caplog.at_level(logging.WARNING):
        assert main(["-i", str(inventory), "secrets", "generate", "--ignore-installed-nodes"]) == 0
    assert (_state(inventory) / "secrets.yaml").exists()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cp2" in m and "cp3" in m and "--ignore-installed-nodes" in m for m in warned), warned
    site = load_inventory(inventory).site
    assert str(site.state_dir) in warned[-1]
