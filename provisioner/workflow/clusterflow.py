"""Form the cluster once every control plane is installed: bootstrap etcd exactly once,
wait for a full voting quorum, fetch the admin kubeconfig.

Bootstrap is the one step that must never run twice (a second bootstrap on another node
splits etcd), so it is guarded twice: by the cluster record (``cluster.json``), and by asking
every control plane whether etcd already has members before calling it. A crash between
Bootstrap and the record is covered by the second guard: the rerun finds members and only
records them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..fsutil import atomic_write, fsync_dir
from ..inventory.model import Node
from ..layout import StateLayout
from ..records import read_cluster_record
from ..state import Phase
from .talos_ops import EtcdMember, TalosAccess, TalosUnavailable

if TYPE_CHECKING:
    from ..pipeline.context import RunContext


class ClusterFailed(Exception):
    pass


@dataclass
class ClusterState:
    bootstrapped: bool = False
    bootstrap_node: str | None = None
    formed: bool = False
    members: list[str] | None = None

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        raw = read_cluster_record(path)  # MalformedState (exit 2, file + recovery) if unreadable
        if raw is None:
            return cls()
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")


def retire_platform(layout: StateLayout) -> Path | None:
    """A new etcd holds no Kubernetes object, so the platform's records (stage records, apply
    journal) describe a cluster that no longer exists: left in place, ``up`` would skip the
    platform stages on the new cluster. They move aside (kept for the operator, never read
    again) to ``platform.retired-<time>``; returns where, or None if there were none."""
    if not layout.platform_dir.exists():
        return None
    retired = layout.root / f"platform.retired-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    os.replace(layout.platform_dir, retired)
    fsync_dir(layout.root)
    return retired


def is_formed(ctx: RunContext) -> bool:
    return ClusterState.load(ctx.layout.cluster_record).formed and ctx.layout.kubeconfig.exists()


async def form(ctx: RunContext) -> ClusterState:
    site, layout, store, progress = ctx.site, ctx.layout, ctx.store, ctx.progress
    assert ctx.talos is not None, "the run context has no Talos access"
    talos = ctx.talos
    cps = site.controlplanes
    path = layout.cluster_record
    state = ClusterState.load(path)
    if state.formed and layout.kubeconfig.exists():
        progress.cluster("formed", "cluster already formed; kubeconfig present")
        return state

    waiting = [n.name for n in cps if store.node(n.name).phase.order < Phase.INSTALLED.order]
    if waiting:
        raise ClusterFailed(f"control planes not installed yet: {', '.join(waiting)}")

    if not state.bootstrapped:
        existing = await _existing_members(cps, talos)
        if existing:
            progress.cluster(
                "bootstrap", f"etcd already has members ({', '.join(existing)}): not bootstrapping again"
            )
            state.bootstrapped = True
        else:
            target = cps[0]
            retired = retire_platform(layout)
            if retired is not None:
                progress.cluster("bootstrap", f"a new etcd: the platform records moved to {retired.name}")
            progress.cluster("bootstrap", f"bootstrapping etcd on {target.name}")
            await talos.bootstrap(str(target.ip))
            state.bootstrapped, state.bootstrap_node = True, target.name
        state.save(path)

    want = {n.name for n in cps}
    deadline = time.monotonic() + site.cluster.timeouts.etcd
    progress.cluster("etcd", f"waiting for {len(want)} voting etcd members")
    last: list[str] = []
    while True:
        voting = await _voting_members(cps, talos)
        if voting is not None:
            if voting != last:
                progress.cluster("etcd", f"voting members: {', '.join(sorted(voting)) or 'none'}")
                last = voting
            if want <= set(voting):
                break
        if time.monotonic() > deadline:
            missing = sorted(want - set(last))
            raise ClusterFailed(
                f"etcd did not reach {len(want)} voting members in time; missing: {', '.join(missing)}"
            )
        await asyncio.sleep(ctx.poll)
    state.members = sorted(last)

    progress.cluster("kubeconfig", "fetching the admin kubeconfig")
    data = await _first_ok(cps, talos.kubeconfig)
    atomic_write(layout.kubeconfig, data, mode=0o600)
    state.formed = True
    state.save(path)
    progress.cluster("formed", f"kubeconfig written to {layout.kubeconfig}")
    return state


async def _answers(cps: list[Node], talos: TalosAccess) -> AsyncIterator[list[EtcdMember]]:
    """etcd's member list as each answering control plane sees it, in inventory order."""
    for cp in cps:
        try:
            yield await talos.etcd_members(str(cp.ip))
        except TalosUnavailable:
            continue


async def _existing_members(cps: list[Node], talos: TalosAccess) -> list[str]:
    """Members of an etcd that already exists anywhere: the guard against a second bootstrap."""
    async for members in _answers(cps, talos):
        if members:
            return [m.hostname for m in members]
    return []


async def _voting_members(cps: list[Node], talos: TalosAccess) -> list[str] | None:
    async for members in _answers(cps, talos):
        return sorted(m.hostname for m in members if not m.is_learner)
    return None


async def _first_ok(cps: list[Node], call: Callable[[str], Awaitable[bytes]]) -> bytes:
    errors = []
    for cp in cps:
        try:
            return await call(str(cp.ip))
        except TalosUnavailable as exc:
            errors.append(f"{cp.name}: {exc}")
    raise ClusterFailed("no control plane answered: " + "; ".join(errors))
