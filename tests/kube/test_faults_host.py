"""Fault injection (the shared spec) and host mode: `provisioner lab kube up/down` leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kube_helpers import Raw, kubectl

from provisioner.lab.kube.faults import FaultSpecError, KubeFaults, parse_faults
from provisioner.lab.kube.host import running


def test_fault_spec_round_trip_and_errors() -> None:
    spec = parse_faults("seed=7,api500=0.05,reset=0.02,stall-watch=0.1,stuck=cozy-system/a;b,fail=c")
    assert spec == KubeFaults(7, 0.05, 0.02, 0.1, ("cozy-system/a", "b"), ("c",))
    assert parse_faults(spec.to_text()) == spec
    assert spec.is_stuck("cozy-system", "a") and spec.is_stuck("x", "b") and not spec.is_stuck("x", "a")
    assert spec.is_failed("any", "c")
    assert parse_faults("") == KubeFaults() and parse_faults(None) == KubeFaults()
    assert spec.rng("x").random() == parse_faults(spec.to_text()).rng("x").random()
    for bad, words in [
        ("bogus=1", "unknown key 'bogus'"),
        ("api500=2", "between 0 and 1"),
        ("reset=lots", "not a number"),
        ("seed=x", "not an integer"),
        ("stuck=", "at least one release"),
        ("api500", "needs a value"),
    ]:
        with pytest.raises(FaultSpecError, match=words):
            parse_faults(bad)


def test_server_faults_500_reset_and_stalled_watch() -> None:
    with running(faults="seed=3,api500=0.4,reset=0.2,stall-watch=1") as host:
        raw = Raw(host)
        assert raw.request("GET", "/version")[0] == 200  # discovery is never faulted
        outcomes = {"ok": 0, "500": 0, "reset": 0}
        for _ in range(60):
            try:
                code, _, doc = raw.request("GET", "/api/v1/namespaces")
            except (ConnectionError, OSError):
                outcomes["reset"] += 1
                continue
            if code == 500:
                assert doc["reason"] == "InternalError" and "fault injection" in doc["message"]
                outcomes["500"] += 1
            else:
                assert code == 200
                outcomes["ok"] += 1
        assert 10 <= outcomes["500"] <= 40 and 3 <= outcomes["reset"] <= 25 and outcomes["ok"] >= 10, outcomes
        events: list[dict[str, object]] = []

        def watch() -> None:
            for _ in range(20):  # the watch request itself may be faulted: retry until one is open
                try:
                    events.extend(
                        raw.stream_lines("/api/v1/namespaces?watch=1&resourceVersion=1&timeoutSeconds=2")
                    )
                    return
                except (ConnectionError, OSError, AssertionError):
                    continue

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.5)
        for i in range(20):
            try:
                if raw.request("POST", "/api/v1/namespaces", {"metadata": {"name": f"s{i}"}})[0] == 201:
                    break
            except (ConnectionError, OSError):
                continue
        t.join(15)
        assert events == [], "a stalled watch delivered events"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_cli_up_down_leaves_nothing_behind(tmp_path: Path) -> None:
    if not Path(sys.executable).with_name("provisioner").exists():
        pytest.fail("the provisioner entry point is not installed in the venv")
    cli = [str(Path(sys.executable).with_name("provisioner")), "-o", "json"]
    env = {**os.environ, "PROVISIONER_LAB_DIR": str(tmp_path / "lab")}
    up = subprocess.run([*cli, "lab", "kube", "up"], capture_output=True, text=True, env=env, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        kubeconfig = Path(info["kubeconfig"])
        assert kubeconfig == (tmp_path / "lab" / "kube" / "kubeconfig").resolve()
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
        for key in ("ca.key", "admin.key", "server.key"):
            assert oct((kubeconfig.parent / "pki" / key).stat().st_mode & 0o777) == "0o600"
        port = int(info["server"].rsplit(":", 1)[1])
        etcd_port = int(info["etcd"].rsplit(":", 1)[1])
        host = type("H", (), {"kubeconfig": kubeconfig})()
        assert kubectl(host, "get", "namespaces").returncode == 0  # type: ignore[arg-type]
        again = subprocess.run(
            [*cli, "lab", "kube", "up"], capture_output=True, text=True, env=env, timeout=60
        )
        assert json.loads(again.stdout)["pids"] == info["pids"], "a second up started a second cluster"
    finally:
        down = subprocess.run(
            [*cli, "lab", "kube", "down"], capture_output=True, text=True, env=env, timeout=60
        )
    assert down.returncode == 0, down.stderr
    assert set(json.loads(down.stdout)["stopped"]) >= {"apiserver", "etcd"}
    for pid in info["pids"].values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not _port_open(port) and not _port_open(etcd_port)
    assert sorted(p.name for p in (tmp_path / "lab" / "kube").iterdir()) == ["pki"]
    bad = subprocess.run(
        [*cli, "lab", "kube", "up", "--faults", "nope=1"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "unknown key 'nope'" in bad.stderr and "Traceback" not in bad.stderr
