"""A synthetic site and state directory in the shapes ``up`` writes: for the report's
benchmark (1,000 nodes) and tests.

Events follow what the real writers emit, kind by kind (``node.step`` from the progress
reporter, ``dhcp.lease``/``tftp.transfer`` from dnsmasq's lease hook, ``ipxe.script``,
``asset.download`` and ``config.fetch`` from the netboot routes, ``cluster.step`` from
cluster formation), with timings drawn from a seeded random generator. They are written in
bulk rather than through ``EventLog.append``, which fsyncs every line: the shape is what
matters here, not the writer's durability.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from ..fsutil import atomic_write, private_dir
from ..inventory.model import Tenant
from ..layout import StateLayout
from ..state import NodeRecord, Phase
from ..tenants import build_tree
from .view import NodeInfo, SiteView

BOOT_FAILURE = (
    "did not boot within 600s after 2 power cycle(s): check its console, boot MAC and DHCP reservation"
)


@dataclass
class Scenario:
    """What happens to whom: failed nodes stop after power-on, slow ones take longer to install."""

    failed: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)  # node -> install time multiplier
    start: float = 1_790_000_000.0
    seed: int = 15
    # Run the platform stages after the cluster formed; a release named here fails them.
    platform: bool = False
    failed_release: str | None = None


def site(nodes: int = 1000, racks: int = 25, cluster: str = "synthetic") -> SiteView:
    """``nodes`` nodes spread over ``racks`` racks, three control planes, and a tenant tree."""
    per_rack = -(-nodes // racks)
    infos = []
    for i in range(nodes):
        rack = f"r{i // per_rack + 1:02d}"
        role = "controlplane" if i in (0, per_rack, 2 * per_rack) or (racks == 1 and i < 3) else "worker"
        infos.append(NodeInfo(f"{rack}-n{i % per_rack + 1:03d}", rack, role))
    root = Tenant(
        etcd=True,
        ingress=True,
        monitoring=True,
        children={
            "acme": Tenant(ingress=True, children={"dev": Tenant(), "prod": Tenant(etcd=True)}),
            "beta": Tenant(seaweedfs=True),
        },
    )
    rack_order = tuple(dict.fromkeys(n.rack for n in infos))
    return SiteView(cluster, "paas-full", tuple(infos), rack_order, build_tree(root, "example.test"))


def _ev(
    out: list[str], clock: list[int], t: float, kind: str, node: str | None, outcome: str = "ok", **data: Any
) -> None:
    clock[0] += 1
    out.append(
        json.dumps(
            {
                "id": clock[0],
                "time": round(t, 3),
                "kind": kind,
                "node": node,
                "outcome": outcome,
                "data": data,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
    )


def write_state(layout: StateLayout, view: SiteView, scenario: Scenario | None = None) -> int:
    """Write node records, the event log and the cluster record; returns the event count."""
    sc = scenario or Scenario()
    rnd = random.Random(sc.seed)
    private_dir(layout.root)
    private_dir(layout.nodes_dir)
    timed: list[tuple[float, str, str | None, str, dict[str, Any]]] = []

    def ev(t: float, kind: str, node: str | None, outcome: str = "ok", **data: Any) -> None:
        timed.append((t, kind, node, outcome, data))

    for offset, stage, status in (
        (0.0, "secrets", "running"),
        (0.1, "secrets", "done"),
        (0.1, "machine-configs", "running"),
        (0.3, "machine-configs", "done"),
        (0.3, "netboot", "running"),
        (0.5, "netboot", "done"),
        (0.5, "nodes", "running"),
        (0.5, "cluster", "running"),
    ):
        ev(sc.start + offset, "pipeline.stage", None, stage=stage, status=status, level="info")
    ev(sc.start, "asset.download", None, "ok", file="kernel-amd64", url="local import")
    last_node = sc.start
    cp_installed: list[float] = []
    records = []
    for idx, n in enumerate(view.nodes):
        t = sc.start + 0.5 + rnd.uniform(0, 4) + idx * 0.01  # BMC slots: nodes start in waves
        mac = f"52:54:00:{idx >> 16 & 255:02x}:{idx >> 8 & 255:02x}:{idx & 255:02x}"
        ev(t, "node.step", n.name, phase="powered-off", detail="powered off")
        t += rnd.uniform(0.3, 1.5)
        ev(t, "node.step", n.name, phase="pxe-set", detail="network boot once")
        t += rnd.uniform(0.3, 1.5)
        ev(t, "node.step", n.name, phase="powered-on", detail="powered on")
        ev(t, "node.step", n.name, phase="booting", detail="waiting for config fetch")
        if n.name in sc.failed:
            for cycle in (1, 2):
                t += 600
                ev(
                    t,
                    "node.step",
                    n.name,
                    "retry",
                    phase="power-cycle",
                    detail=f"no boot in 600s, power cycle {cycle}",
                )
            t += 600
            ev(t, "node.step", n.name, "error", phase="powered-on", detail=BOOT_FAILURE)
            records.append(NodeRecord(n.name, Phase.POWERED_ON, attempts=2, error=BOOT_FAILURE, updated=t))
            last_node = max(last_node, t)
            continue
        t += rnd.uniform(8, 20)
        ev(t, "dhcp.lease", n.name, action="add", mac=mac, ip=f"10.0.{idx >> 8}.{idx & 255}", ipxe=False)
        ev(
            t + 0.2,
            "tftp.transfer",
            None,
            ip=f"10.0.{idx >> 8}.{idx & 255}",
            file="undionly.kpxe",
            size=70000,
        )
        t += rnd.uniform(2, 6)
        ev(t, "dhcp.lease", n.name, action="old", mac=mac, ip=f"10.0.{idx >> 8}.{idx & 255}", ipxe=True)
        t += 0.5
        ev(t, "ipxe.script", n.name, "install", mac=mac)
        t += rnd.uniform(5, 15)
        ev(t, "asset.download", n.name, "served", file="kernel-amd64")
        ev(t + 1, "asset.download", n.name, "served", file="initramfs-amd64.xz")
        t += rnd.uniform(10, 30)
        ev(t, "config.fetch", n.name, bytes=24000)
        t += 2.0
        ev(t, "node.step", n.name, phase="config-delivered", detail="config fetched over HTTP")
        ev(t, "node.step", n.name, phase="installing", detail="waiting for the installed OS (mutual TLS)")
        t += rnd.uniform(40, 90) * sc.slow.get(n.name, 1.0)
        ev(t, "node.step", n.name, phase="installed", detail="installed, answering as v1.11.6")
        if n.role == "controlplane":
            cp_installed.append(t)
        t += rnd.uniform(0.5, 2)
        ev(t, "node.step", n.name, phase="ready", detail="boots from disk (persistent)")
        records.append(NodeRecord(n.name, Phase.READY, installed=True, updated=t))
        last_node = max(last_node, t)
    cps = [n.name for n in view.nodes if n.role == "controlplane"]
    if cp_installed and len(cp_installed) == len(cps):
        t = max(cp_installed) + 1
        ev(t, "cluster.step", None, step="bootstrap", detail=f"bootstrapping etcd on {cps[0]}")
        ev(t + 1, "cluster.step", None, step="etcd", detail=f"waiting for {len(cps)} voting etcd members")
        for k in range(1, len(cps) + 1):
            t += rnd.uniform(10, 25)
            ev(t, "cluster.step", None, step="etcd", detail=f"voting members: {', '.join(sorted(cps[:k]))}")
        ev(t + 1, "cluster.step", None, step="kubeconfig", detail="fetching the admin kubeconfig")
        ev(t + 3, "cluster.step", None, step="formed", detail="kubeconfig written")
        ev(t + 3, "pipeline.stage", None, stage="cluster", status="done", level="info")
        atomic_write(
            layout.cluster_record,
            json.dumps(
                {"bootstrapped": True, "bootstrap_node": cps[0], "formed": True, "members": sorted(cps)}
            ),
        )
        if sc.platform:
            _platform_events(ev, t + 4, sc.failed_release)
    failed = bool(sc.failed)
    ev(
        last_node,
        "pipeline.stage",
        None,
        "error" if failed else "ok",
        stage="nodes",
        status="failed" if failed else "done",
        level="error" if failed else "info",
    )
    timed.sort(key=lambda e: e[0])
    lines: list[str] = []
    clock = [0]
    by_node: dict[str, int] = {}
    for t, kind, node, outcome, data in timed:
        _ev(lines, clock, t, kind, node, outcome, **data)
        if node is not None:
            by_node[node] = clock[0]
    atomic_write(layout.events, "\n".join(lines) + "\n")
    for rec in records:
        raw = json.loads(rec.to_json())
        raw["last_event"] = by_node.get(rec.name, 0)
        atomic_write(layout.node_record(rec.name), json.dumps(raw, sort_keys=True, indent=1) + "\n")
    return len(lines)


def _platform_events(ev: Any, t: float, failed_release: str | None) -> None:
    """The platform stages after the cluster formed, in ``pipeline.stage`` events."""
    for stage, seconds in (("api-ready", 5), ("contract", 3), ("installer-assets", 20)):
        ev(t, "pipeline.stage", None, stage=stage, status="running", level="info")
        t += seconds
        ev(t, "pipeline.stage", None, stage=stage, status="done", level="info")
    ev(t, "pipeline.stage", None, stage="helmreleases", status="running", level="info")
    if failed_release:
        ev(
            t + 900,
            "pipeline.stage",
            None,
            "error",
            stage="helmreleases",
            status="failed",
            level="error",
            detail=f"{failed_release}: InstallFailed",
        )
        return
    t += 600
    ev(t, "pipeline.stage", None, stage="helmreleases", status="done", level="info")
    for stage, seconds in (("storage", 60), ("virtualization", 90), ("networking", 10), ("tenants", 15)):
        ev(t, "pipeline.stage", None, stage=stage, status="running", level="info")
        t += seconds
        ev(t, "pipeline.stage", None, stage=stage, status="done", level="info")


def helmreleases_record(layout: StateLayout, failed: str, releases: dict[str, list[str]], now: float) -> None:
    """A helmreleases stage record with ``failed`` broken and what depends on it waiting."""
    waiting: set[str] = set()
    frontier = [failed]
    while frontier:
        cur = frontier.pop()
        for key, deps in releases.items():
            if cur in deps and key not in waiting:
                waiting.add(key)
                frontier.append(key)
    out = {}
    for key, deps in releases.items():
        if key == failed:
            entry = {
                "ready": False,
                "reason": "InstallFailed",
                "message": "install retries exhausted",
                "blockedBy": None,
            }
        elif key in waiting:
            blocker = next((d for d in deps if d == failed or d in waiting), failed)
            entry = {
                "ready": False,
                "reason": "DependencyNotReady",
                "message": f"dependency '{blocker}' is not ready",
                "blockedBy": blocker,
            }
        else:
            entry = {"ready": True, "reason": "InstallSucceeded", "message": "", "blockedBy": None}
        out[key] = {**entry, "dependsOn": deps}
    private_dir(layout.platform_dir)
    atomic_write(
        layout.platform_stage("helmreleases"),
        json.dumps({"bundle": "paas-full", "releases": out, "updated": now}, indent=1),
    )
