"""kubectl and etcd probes in a lab's network namespace: the independent clients the e2e checks trust."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from provisioner.lab import netns
from provisioner.lab.rehearsal import LabRun

VIP = "192.168.77.10"
NODES = ["cp1", "cp2", "cp3", "w1"]


def kubectl(
    lab: LabRun, *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """kubectl in the lab's namespace; a run that hangs past ``timeout`` counts as a failed run."""
    argv = ["kubectl", "--kubeconfig", str(lab.state / "kubeconfig"), "--request-timeout=60s", *args]
    try:
        return subprocess.run(
            netns.exec_argv(lab.namespace, argv), capture_output=True, text=True, input=stdin, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"kubectl timed out after {timeout:.0f}s")


def kubectl_json(lab: LabRun, *args: str) -> Any:
    """``kubectl get ARGS -o json``; fails the test when kubectl does."""
    res = kubectl(lab, "get", *args, "-o", "json", timeout=180)
    assert res.returncode == 0, f"kubectl get {' '.join(args)}: {res.stderr}"
    return json.loads(res.stdout)


def vip_holder(lab: LabRun, timeout: float = 5.0) -> str:
    """Which control plane holds the VIP election key (read from etcd through the VIP); ''
    when nothing answers there within ``timeout`` seconds."""
    body = json.dumps({"key": base64.b64encode(f"/standin/vip/{VIP}".encode()).decode()})
    code = (
        "import sys, urllib.request\n"
        "req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode())\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "print(opener.open(req, timeout=float(sys.argv[3])).read().decode())\n"
    )
    try:
        res = subprocess.run(
            netns.exec_argv(
                lab.namespace,
                [sys.executable, "-c", code, f"http://{VIP}:2379/v3/kv/range", body, str(timeout)],
            ),
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return ""
    if res.returncode != 0:
        return ""
    kvs = json.loads(res.stdout).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else ""


def wait_for(what: str, timeout: float, probe: Any, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def nodes(lab: LabRun) -> dict[str, dict[str, Any]]:
    res = kubectl(lab, "get", "nodes", "-o", "json")
    if res.returncode != 0:
        return {}
    return {n["metadata"]["name"]: n for n in json.loads(res.stdout)["items"]}


def ready(obj: dict[str, Any]) -> str:
    """The status of an object's Ready condition ("True", "False", "Unknown"), "" without one."""
    conditions = obj.get("status", {}).get("conditions", [])
    return next((c["status"] for c in conditions if c.get("type") == "Ready"), "")
