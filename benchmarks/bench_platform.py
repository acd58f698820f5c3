"""Platform install benchmark: paas-full against the host API stand-in + Cozystack simulator, zero delay.

What it measures (``provisioner platform install`` on the lab's 4-node paas-full inventory, the way an
operator runs it after cluster formation):
- first run: API requests per object applied, counted by the tool's own client (``kube.Counters``,
  reported in the command's JSON summary): the requests the apply layer makes, writes plus the reads it
  does to decide on a write, over the objects it applied. The stand-in's ``/stand-in/requests`` counter
  cannot separate clients (the simulator writes status all the time), so it is printed for the rerun
  only, as context. Ideal is 1.0: one server-side apply per object and no read before it (``apply.py``:
  an object never applied is applied blind). Target <= 1.5.
- rerun (``--redo``: every stage runs again): writes by the tool. Target 0.
- wall time of the first run (reported; the simulator's release delay is 0, so this is the tool's own
  overhead plus the simulator's reconcile loop).
The four Nodes are registered by this script (playing the kubelets: name, InternalIP, the disks
annotation the simulator reads), as cluster formation would have left them.

Run: make bench-platform  (or .venv/bin/python benchmarks/bench_platform.py --help)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightkube import Client, codecs  # noqa: E402
from lightkube.config.kubeconfig import KubeConfig  # noqa: E402

from provisioner.cli import main as cli  # noqa: E402
from provisioner.lab.kube.host import running  # noqa: E402

WRITE_VERBS = ("create", "update", "patch", "apply", "delete")


def inventory(tmp: Path) -> Path:
    lab = yaml.safe_load((REPO / "inventory/examples/lab.yaml").read_text())
    lab["cluster"]["state_dir"] = str(tmp / "state")
    lab["cluster"]["timeouts"] = {"platform": 300}
    for node in lab["nodes"]:
        node["bmc"]["password"] = "env:UNUSED"
        node["bmc"].pop("ca_file", None)
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(lab))
    return path


def register_nodes(kubeconfig: Path, site: dict[str, Any]) -> None:
    client = Client(config=KubeConfig.from_file(str(kubeconfig)).get(), field_manager="bench-kubelet")
    for node in site["nodes"]:
        obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node["name"],
                "labels": {"kubernetes.io/hostname": node["name"]},
                "annotations": {"lab.provisioner/disks": ",".join(node.get("data_disks", []))},
            },
        }
        client.apply(codecs.from_dict(obj), force=True)
        status = {"status": {"addresses": [{"type": "InternalIP", "address": node["ip"]}]}}
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        client.patch(Node.Status, node["name"], status, patch_type=PatchType.MERGE)


def counts(kubeconfig: Path, reset: bool = False) -> dict[str, int]:
    sys.path.insert(0, str(REPO / "tests" / "cozystack"))
    from standin_harness import request_counts

    return request_counts(kubeconfig, reset=reset)


def writes(c: dict[str, int]) -> int:
    return sum(n for k, n in c.items() if k.split(" ", 1)[0].lower() in WRITE_VERBS)


def install(site_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run ``platform install -o json`` in-process; (exit code, the JSON summary or {})."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(["-i", str(site_path), "-o", "json", "platform", "install", *extra])
    text = out.getvalue()
    return rc, (json.loads(text[text.index("{") :]) if "{" in text else {})


def run(tmp: Path) -> dict[str, Any]:
    site_path = inventory(tmp)
    site = yaml.safe_load(site_path.read_text())
    with running(tmp / "kube", simulator=True, delay=0.0) as host:
        state = tmp / "state"
        state.mkdir(parents=True, exist_ok=True)
        shutil.copy(host.kubeconfig, state / "kubeconfig")
        register_nodes(host.kubeconfig, site)
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli(["-i", str(site_path), "platform", "assets", "lab-import"]) == 0
        started = time.monotonic()
        rc, first = install(site_path)
        wall = time.monotonic() - started
        counts(host.kubeconfig, reset=True)
        rc2, second = install(site_path, "--redo")
        server_second = counts(host.kubeconfig)
    return {
        "rc": rc,
        "rc2": rc2,
        "wall": wall,
        "first": first,
        "second": second,
        "server_second": server_second,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-platform-"))
    try:
        result = run(tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    first, second = result["first"], result["second"]
    objects = first.get("objects", 0)
    per_object = first.get("apply_requests", 0) / max(objects, 1)
    print(
        f"first run: exit {result['rc']}, {objects} objects applied with {first.get('apply_requests')} "
        f"requests ({first.get('writes')} writes); all requests incl. waiting: {first.get('requests')}; "
        f"wall {result['wall']:.1f} s"
    )
    print(
        f"rerun (--redo): exit {result['rc2']}, {second.get('writes')} writes {second.get('written')}; "
        f"requests {second.get('requests')}"
    )
    print(
        "rerun writes seen by the stand-in (every client, the simulator included): "
        f"{writes(result['server_second'])}"
    )
    ok = result["rc"] == 0 and result["rc2"] == 0 and per_object <= 1.5 and second.get("writes") == 0
    print(f"rerun writes: {second.get('writes')} (target == 0)")
    print(f"platform api requests per object applied: {per_object:.2f} (target <= 1.5)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
