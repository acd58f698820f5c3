"""The CLI: render, assets import, and `netboot serve` as a real foreground process
(clean shutdown on SIGINT/SIGTERM, reload when the inventory changes)."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netboot_sites import write_inventory

from provisioner.cli import main

REPO = Path(__file__).resolve().parents[2]
NODES = [
    {
        "name": "cp1",
        "rack": "r1",
        "role": "controlplane",
        "boot": {"mac": "52:54:00:aa:00:01"},
        "ip": "127.0.0.11",
    },
    {"name": "w1", "rack": "r2", "role": "worker", "boot": {"mac": "52:54:00:aa:00:02"}, "ip": "127.0.0.12"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inv", "127.0.0.1", "127.0.0.0/8", "127.0.0.1", NODES, free_port())


def test_render_writes_tested_config(
    inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["-i", str(inventory), "netboot", "render", "--out", str(out), "--interface", "lo"]) == 0
    text = (out / "dnsmasq.conf").read_text()
    assert "dhcp-host=52:54:00:aa:00:01,127.0.0.11,cp1,1h" in text
    assert "dnsmasq --test ok" in capsys.readouterr().out


def test_render_without_netboot_section_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosted.yaml"
    inv.write_text(
        "cluster: {name: h, bundle: paas-hosted, root_host: a.example, "
        "api_server_endpoint: 'https://1.2.3.4:6443'}\nhosted: {kubeconfig: kc}\n"
    )
    assert main(["-i", str(inv), "netboot", "render"]) == 2
    assert "networks.netboot" in capsys.readouterr().err


def test_assets_import_cli(inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k, i = tmp_path / "k", tmp_path / "i"
    k.write_bytes(b"kernel")
    i.write_bytes(b"initrd")
    rc = main(
        [
            "-i",
            str(inventory),
            "assets",
            "import",
            "--kernel",
            str(k),
            "--initramfs",
            str(i),
            "--assets-dir",
            str(tmp_path / "assets"),
        ]
    )
    assert rc == 0
    assert (inventory.parent / "assets.lock.yaml").exists()
    # the lock file beside the inventory must not break loading it
    assert main(["-i", str(inventory), "validate"]) == 0
    assert (
        main(
            [
                "-i",
                str(inventory),
                "assets",
                "import",
                "--kernel",
                str(tmp_path / "missing"),
                "--initramfs",
                str(i),
            ]
        )
        == 2
    )
    assert "missing" in capsys.readouterr().err


def _wait_http(port: int, proc: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited early: {proc.communicate()[1]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("serve never listened")


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_foreground_reload_and_clean_shutdown(inventory: Path, tmp_path: Path, sig: int) -> None:
    import yaml

    port = yaml.safe_load(inventory.read_text())["networks"]["netboot"]["http_port"]
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "provisioner"),
            "-i",
            str(inventory),
            "netboot",
            "serve",
            "--no-dhcp",
            "--assets-dir",
            str(tmp_path / "assets"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_http(port, proc)
        assert _get(port, "/boot.ipxe")[0] == 200
        assert _get(port, "/node.ipxe?mac=52-54-00-aa-00-03")[0] == 404
        # add a node to the inventory: the running service picks it up
        doc = yaml.safe_load(inventory.read_text())
        new = dict(doc["nodes"][1], name="w2", ip="127.0.0.13", boot={"mac": "52:54:00:aa:00:03"})
        new["bmc"] = dict(new["bmc"], port=6299)
        doc["nodes"].append(new)
        inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        deadline = time.monotonic() + 15
        while _get(port, "/node.ipxe?mac=52-54-00-aa-00-03")[0] == 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        # assets are absent here, so the known node gets 503 rather than 404
        assert _get(port, "/node.ipxe?mac=52-54-00-aa-00-03")[0] == 503
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "netboot: stopped" in err
    assert "Traceback" not in err
