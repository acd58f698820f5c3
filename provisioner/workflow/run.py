"""The `up` pipeline, top to bottom:

    validate (already done by loading the site)
    -> secrets (once) and machine configs
    -> netboot service up
    -> every selected node: power off, PXE once, power on, config delivered, installed, boot from disk
    -> cluster: bootstrap etcd once, full voting quorum, kubeconfig

Nodes run side by side; one node's failure never stops the others. The run returns a
per-node summary; the CLI exits 1 if any node or the cluster step failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..events import EventLog
from ..inventory.model import Node, Site
from ..state import Phase, StateStore
from . import clusterflow, nodeflow
from .locks import cluster_lock, hold_racks
from .progress import Progress


@dataclass
class NodeOutcome:
    name: str
    rack: str
    phase: str
    ok: bool
    error: str | None = None
    seconds: float = 0.0


@dataclass
class UpResult:
    nodes: list[NodeOutcome] = field(default_factory=list)
    cluster: str = "skipped"  # formed | skipped | failed | waiting
    cluster_error: str | None = None
    kubeconfig: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nodes) and self.cluster in ("formed", "waiting", "hosted")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "cluster": self.cluster,
            "cluster_error": self.cluster_error,
            "kubeconfig": self.kubeconfig,
            "seconds": round(self.seconds, 1),
            "nodes": [n.__dict__ for n in self.nodes],
        }


class _Slots:
    """BMC concurrency: at most ``total`` commands at once, at most ``per_rack`` per rack."""

    def __init__(self, total: int, per_rack: int) -> None:
        self.total = asyncio.Semaphore(total)
        self.racks: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_rack))

    @contextlib.asynccontextmanager
    async def __call__(self, node: Node) -> AsyncIterator[None]:
        async with self.racks[node.rack], self.total:
            yield


def up(
    site: Site,
    nodes: list[Node],
    progress_mode: str = "auto",
    bmc_concurrency: int = 32,
    per_rack: int = 8,
    poll: float = 2.0,
) -> UpResult:
    started = time.monotonic()
    if site.cluster.bundle_spec.hosted:
        return _hosted(site)

    from ..talos.configs import generate_configs
    from ..talos.secrets import ensure_secrets

    store = StateStore(site.state_dir)
    events = EventLog(store.events_path)
    result = UpResult()
    with hold_racks(store.locks_dir, [n.rack for n in nodes]):
        ensure_secrets(site)
        config_paths = generate_configs(site)
        talosconfig = site.state_dir / "talosconfig"
        pending = [n for n in nodes if store.node(n.name).phase is not Phase.READY]

        with Progress(events, progress_mode) as progress:
            for n in nodes:
                progress.add(n.name, n.rack, store.node(n.name).phase.value)
            with contextlib.ExitStack() as stack:
                if pending:
                    from ..netboot.service import NetbootService

                    stack.enter_context(NetbootService(site, store, events, nodes=pending))
                outcomes, (result.cluster, result.cluster_error) = asyncio.run(
                    _run_all(
                        site,
                        pending,
                        store,
                        events,
                        progress,
                        config_paths,
                        talosconfig,
                        _Slots(bmc_concurrency, per_rack),
                        poll,
                    )
                )
            for n in nodes:
                rec = store.node(n.name)
                outcome = outcomes.get(n.name)
                result.nodes.append(
                    NodeOutcome(
                        n.name,
                        n.rack,
                        rec.phase.value,
                        rec.phase is Phase.READY,
                        rec.error,
                        outcome.seconds if outcome else 0.0,
                    )
                )
            if result.cluster == "formed":
                result.kubeconfig = str(clusterflow.kubeconfig_path(store))
    result.seconds = time.monotonic() - started
    return result


async def _run_all(
    site: Site,
    nodes: list[Node],
    store: StateStore,
    events: EventLog,
    progress: Progress,
    config_paths: dict[str, Any],
    talosconfig: Any,
    slots: _Slots,
    poll: float,
) -> tuple[dict[str, NodeOutcome], tuple[str, str | None]]:
    """Drive the nodes and, beside them, form the cluster as soon as every control plane
    is installed: workers need the control-plane endpoint (the VIP, which comes up with
    etcd) to finish, exactly as on real Talos, so the cluster must not wait for them."""
    configs_dir = next(iter(config_paths.values())).parent if config_paths else site.state_dir / "configs"
    finished: dict[str, NodeOutcome] = {}
    cluster_failed = asyncio.Event()

    async def one(node: Node) -> NodeOutcome:
        t0 = time.monotonic()
        run = nodeflow.NodeRun(
            site, node, store, events, progress, configs_dir, talosconfig, slots, poll, cluster_failed
        )
        try:
            rec = await nodeflow.drive(run)
            out = NodeOutcome(node.name, node.rack, rec.phase.value, True, None, time.monotonic() - t0)
        except nodeflow.NodeFailed as exc:
            rec = store.update(node.name, error=str(exc))
            progress.step(node.name, rec.phase.value, str(exc), "error")
            out = NodeOutcome(node.name, node.rack, rec.phase.value, False, str(exc), time.monotonic() - t0)
        except Exception as exc:  # a bug in one node's flow must not stop the others
            msg = f"unexpected {type(exc).__name__}: {exc}"
            rec = store.update(node.name, error=msg)
            progress.step(node.name, rec.phase.value, msg, "error")
            out = NodeOutcome(node.name, node.rack, rec.phase.value, False, msg, time.monotonic() - t0)
        finished[node.name] = out
        return out

    async def cluster() -> tuple[str, str | None]:
        in_run = {n.name for n in nodes}
        while True:
            cps = [(cp.name, store.node(cp.name)) for cp in site.controlplanes]
            if all(rec.phase.order >= Phase.INSTALLED.order for _, rec in cps):
                break
            failed = [name for name, _ in cps if name in finished and not finished[name].ok]
            if failed:
                cluster_failed.set()
                return "failed", f"control planes failed to install: {', '.join(failed)}"
            outside = [
                name for name, rec in cps if name not in in_run and rec.phase.order < Phase.INSTALLED.order
            ]
            if outside:
                progress.cluster(
                    "waiting",
                    f"control planes outside this selection are not installed: {', '.join(outside)}",
                )
                return "waiting", None
            await asyncio.sleep(poll)
        try:
            with cluster_lock(store.locks_dir):
                await clusterflow.form(site, store, progress, talosconfig, poll)
            return "formed", None
        except Exception as exc:  # reported per run, never a traceback
            cluster_failed.set()
            progress.cluster("failed", str(exc), "error")
            return "failed", str(exc)

    cluster_task = asyncio.create_task(cluster())
    outcomes = await asyncio.gather(*(one(n) for n in nodes))
    return {o.name: o for o in outcomes}, await cluster_task


def _hosted(site: Site) -> UpResult:
    assert site.hosted is not None
    path = site.base_dir / site.hosted.kubeconfig
    if not path.is_file():
        raise InputError(f"hosted.kubeconfig: {path} does not exist")
    return UpResult(cluster="hosted", kubeconfig=str(path))
