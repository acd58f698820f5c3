"""``provisioner report``: default path, --out, located errors with exit 2, --serve on
loopback with nothing but the page, and no secrets in what it shows."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from provisioner.cli import main
from provisioner.inventory import load_inventory
from provisioner.layout import StateLayout
from provisioner.report import view_of
from provisioner.report.serve import ReportServer

from .conftest import LAB_INVENTORY, LAB_RUN

SECRET = "S3CRET-MARKER-do-not-show"


@pytest.fixture
def inventory(tmp_path: Path) -> tuple[Path, StateLayout]:
    """The lab inventory with its state directory in tmp, holding the recorded lab run and
    secret-bearing files the report must never read."""
    state = tmp_path / "state"
    shutil.copytree(LAB_RUN, state)
    raw = yaml.safe_load(LAB_INVENTORY.read_text())
    raw["cluster"]["state_dir"] = str(state)
    inv = tmp_path / "lab.yaml"
    inv.write_text(yaml.safe_dump(raw))
    layout = StateLayout(state)
    for path in (layout.secrets, layout.kubeconfig, layout.talosconfig, layout.config("cp1")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"key: {SECRET}\n")
    return inv, layout


def test_report_writes_the_default_file(
    inventory: tuple[Path, StateLayout], capsys: pytest.CaptureFixture[str]
) -> None:
    inv, layout = inventory
    assert main(["-i", str(inv), "report"]) == 0
    assert str(layout.report) in capsys.readouterr().out
    page = layout.report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert 'data-node="w1"' in page
    assert SECRET not in page
    # Self-contained: nothing is loaded from anywhere, and no script in the file.
    assert "<script" not in page
    for attr in ('src="http', "src='http", 'href="http', "@import", "url("):
        assert attr not in page


def test_report_out_and_json(
    inventory: tuple[Path, StateLayout], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv, _ = inventory
    out = tmp_path / "mail" / "site.html"
    out.parent.mkdir()
    assert main(["-i", str(inv), "-o", "json", "report", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == {"report": str(out)}
    assert out.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--out", "/nonexistent-dir/report.html"],
            "--out /nonexistent-dir/report.html: directory /nonexistent-dir",
        ),
        (["--serve", "--out", "x.html"], "--out and --serve do not go together"),
        (["--port", "70000"], "70000"),
    ],
)
def test_bad_usage_exits_2(
    inventory: tuple[Path, StateLayout], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    inv, _ = inventory
    assert main(["-i", str(inv), "report", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_malformed_platform_record_exits_2_naming_file_and_field(
    inventory: tuple[Path, StateLayout], capsys: pytest.CaptureFixture[str]
) -> None:
    inv, layout = inventory
    record = layout.platform_stage("helmreleases")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps({"bundle": "paas-full", "releases": {"cozy-cilium/cilium": {"ready": "maybe"}}})
    )
    assert main(["-i", str(inv), "report"]) == 2
    err = capsys.readouterr().err
    assert f"{record}: releases.cozy-cilium/cilium.ready: expected true, false or null" in err
    assert not layout.report.exists()


def test_port_in_use_exits_2(inventory: tuple[Path, StateLayout], capsys: pytest.CaptureFixture[str]) -> None:
    inv, _ = inventory
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["-i", str(inv), "report", "--serve", "--port", str(port)]) == 2
    assert f"127.0.0.1:{port} is already in use" in capsys.readouterr().err


def test_server_serves_the_page_and_nothing_else(inventory: tuple[Path, StateLayout]) -> None:
    inv, layout = inventory
    view = view_of(load_inventory(inv).site)
    with ReportServer(view, layout, port=0) as server:
        assert server.httpd.server_address[0] == "127.0.0.1"  # loopback unless told otherwise
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            page = resp.read().decode()
        assert 'data-node="cp1"' in page and SECRET not in page
        assert "/version" in page  # the served page polls for changes
        with urllib.request.urlopen(server.url + "version", timeout=10) as resp:
            version = resp.read().decode()
        assert version and version in page
        for path in (
            "secrets.yaml",
            "kubeconfig",
            "configs/cp1.yaml",
            "../state/secrets.yaml",
            "events.jsonl",
        ):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(server.url + path, timeout=10)
            assert err.value.code == 404


def test_served_page_names_a_malformed_record_and_keeps_serving(inventory: tuple[Path, StateLayout]) -> None:
    inv, layout = inventory
    view = view_of(load_inventory(inv).site)
    record = layout.platform_stage("helmreleases")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("{broken")
    with ReportServer(view, layout, port=0) as server:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url, timeout=10)
        assert err.value.code == 500
        assert str(record) in err.value.read().decode()
        record.unlink()
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert resp.status == 200


def test_serve_command_runs_until_interrupted(inventory: tuple[Path, StateLayout]) -> None:
    inv, _ = inventory
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "provisioner"),
            "-i",
            str(inv),
            "report",
            "--serve",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving the report of lab on http://127.0.0.1:" in line
        url = line.split(" on ", 1)[1].split()[0]
        deadline = time.monotonic() + 10
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and b'data-node="w1"' in resp.read()
        assert time.monotonic() < deadline
    finally:
        proc.send_signal(2)  # Ctrl-C
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_malformed_node_record_is_shown_not_fatal(
    inventory: tuple[Path, StateLayout], capsys: pytest.CaptureFixture[str]
) -> None:
    inv, layout = inventory
    layout.node_record("cp2").write_text('{"name": "cp2", "phase": "half-installed"}')
    assert main(["-i", str(inv), "report"]) == 0
    err = capsys.readouterr().err
    assert f"{layout.node_record('cp2')}: node record is malformed" in err
    page = layout.report.read_text()
    assert 'data-node="cp2" data-state="failed"' in page
    assert "node record is malformed" in page  # the page says which file to fix


def test_credentials_in_errors_and_events_never_reach_the_page(inventory: tuple[Path, StateLayout]) -> None:
    inv, layout = inventory
    record = json.loads(layout.node_record("w1").read_text())
    record["error"] = f"BMC power on failed: password={SECRET} rejected"
    layout.node_record("w1").write_text(json.dumps(record))
    with layout.events.open("a") as fh:
        fh.write(
            json.dumps(
                {
                    "id": 10_000,
                    "time": 1_796_150_999.0,
                    "kind": "node.step",
                    "node": "cp1",
                    "outcome": "error",
                    "data": {
                        "phase": "ready",
                        "detail": f"token: {SECRET} -----BEGIN PRIVATE KEY-----\n{SECRET}",
                    },
                }
            )
            + "\n"
        )
    assert main(["-i", str(inv), "report"]) == 0
    page = layout.report.read_text()
    assert SECRET not in page
    assert "password=&lt;redacted&gt;" in page  # the rest of the message stays readable


def test_global_selection_limits_the_page(inventory: tuple[Path, StateLayout]) -> None:
    inv, layout = inventory
    assert main(["-i", str(inv), "--node", "cp1", "--node", "w1", "report"]) == 0
    page = layout.report.read_text()
    assert page.count('class="cell state-') == 2
    assert 'data-node="cp2"' not in page
    assert main(["-i", str(inv), "--rack", "nosuchrack", "report"]) == 2
