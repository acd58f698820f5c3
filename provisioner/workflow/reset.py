"""Wipe nodes through the Talos API and keep the records true.

A control plane is reset *gracefully* (it leaves etcd first) unless every control plane is
being reset: then there is no etcd left to leave, and a graceful reset of the last member
would be refused. The cluster record follows: once a control plane is wiped the cluster is
no longer "formed" (the next ``up`` waits for a full quorum again and fetches a fresh
kubeconfig); once no installed control plane is left, etcd is gone and the next ``up``
bootstraps again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..events import EventLog
from ..inventory.model import Node, Role, Site
from ..layout import StateLayout
from ..state import NodeRecord, StateStore
from .clusterflow import ClusterState, retire_platform
from .talos_ops import TalosUnavailable

if TYPE_CHECKING:
    from ..pipeline.context import RunContext


@dataclass
class ResetResult:
    wiped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rebootstrap: bool = False  # the next ``up`` bootstraps etcd again
    # etcd members that belong to no installed control plane (a wiped node that did not leave,
    # or a machine not in the inventory), with the command that removes each: name -> command
    stale: dict[str, str] = field(default_factory=dict)


async def reset_nodes(ctx: RunContext, nodes: list[Node]) -> ResetResult:
    assert ctx.talos is not None, "the run context has no Talos access"
    result = ResetResult()
    chosen = {n.name for n in nodes}
    every_cp = all(cp.name in chosen for cp in ctx.site.controlplanes)
    for node in nodes:
        graceful = node.role is Role.CONTROLPLANE and not every_cp
        try:
            await ctx.talos.reset(str(node.ip), graceful)
        except TalosUnavailable as exc:
            result.failed[node.name] = str(exc)
            continue
        # A fresh record (never read: the old one may be the malformed record this reset
        # recovers from); events before the reset no longer count for this node.
        event = ctx.events.append("node.reset", node=node.name, graceful=graceful)
        ctx.store.save(NodeRecord(node.name, last_event=event.id))
        result.wiped.append(node.name)
    # The Reset call returns before the node has wiped itself: a slow node still answers over
    # mutual TLS for a while, and an `up` started at once took it for installed (lab e2e). So the
    # reset ends only when every wiped node stopped answering.
    deadline = time.monotonic() + float(ctx.site.cluster.timeouts.boot)
    still = await asyncio.gather(*(_gone(ctx, n, deadline) for n in nodes if n.name in result.wiped))
    for name in filter(None, still):
        result.failed[name] = (
            "the node accepted the reset but still answers over mutual TLS after "
            f"{ctx.site.cluster.timeouts.boot:.0f} s (timeouts.boot); check its console"
        )
    _update_cluster_record(ctx, result)
    if not result.rebootstrap and any(cp.name in result.wiped for cp in ctx.site.controlplanes):
        result.stale = await stale_members(ctx)
    return result


async def _gone(ctx: RunContext, node: Node, deadline: float, every: float = 2.0) -> str | None:
    """None once ``node`` no longer answers the machine API over mutual TLS; its name if it
    still does at ``deadline``."""
    assert ctx.talos is not None
    while await ctx.talos.secure_version(str(node.ip)) is not None:
        if time.monotonic() >= deadline:
            return node.name
        await asyncio.sleep(every)
    return None


async def stale_members(ctx: RunContext) -> dict[str, str]:
    """Members etcd still lists that are no installed control plane of the inventory, as seen
    by the first installed control plane that answers; each with the command that removes it
    (the machine API subset this tool speaks has no member removal, talosctl has)."""
    assert ctx.talos is not None
    installed = [cp for cp in ctx.site.controlplanes if ctx.store.node(cp.name).installed]
    for cp in installed:
        try:
            members = await ctx.talos.etcd_members(str(cp.ip))
        except TalosUnavailable:
            continue
        keep = {c.name for c in installed}
        return {
            m.hostname: f"talosctl -n {cp.ip} etcd remove-member {m.id:x}"
            for m in members
            if m.hostname not in keep
        }
    return {}


def _update_cluster_record(ctx: RunContext, result: ResetResult) -> None:
    wiped_cps = [cp.name for cp in ctx.site.controlplanes if cp.name in result.wiped]
    if not wiped_cps:
        return
    result.rebootstrap, retired = _unform(ctx.site, ctx.layout, ctx.store)
    ctx.events.append(
        "cluster.reset",
        wiped=wiped_cps,
        rebootstrap=result.rebootstrap,
        platform_retired=retired.name if retired else None,
    )


def _unform(site: Site, layout: StateLayout, store: StateStore) -> tuple[bool, Path | None]:
    """Control planes were wiped: the cluster record no longer says formed, and once no
    installed control plane is left it says not bootstrapped either (the next ``up``
    bootstraps a new etcd) and the platform records are retired. Returns (rebootstrap,
    where the platform records went)."""
    state = ClusterState.load(layout.cluster_record)
    state.formed, state.members = False, None
    rebootstrap, retired = False, None
    if not any(store.node(cp.name).installed for cp in site.controlplanes):
        state.bootstrapped, state.bootstrap_node = False, None
        rebootstrap = True
    state.save(layout.cluster_record)
    if rebootstrap:
        retired = retire_platform(layout)
    return rebootstrap, retired


def forget_nodes(site: Site, names: list[str], why: str) -> list[str]:
    """The machines themselves were replaced or wiped outside the tool (a lab torn down, a
    server swapped): their records no longer describe them. Each record starts blank (so
    ``up`` provisions it again instead of trusting "ready"), and the cluster record follows
    as after a reset; secrets and configs stay. Returns the nodes that had a record."""
    layout = StateLayout(site.state_dir)
    if not layout.nodes_dir.exists():
        return []
    store, events = StateStore(site.state_dir), EventLog(layout.events)
    forgotten = []
    for name in names:
        if not layout.node_record(name).exists():
            continue
        event = events.append("node.forgotten", node=name, reason=why)
        store.save(NodeRecord(name, last_event=event.id))
        forgotten.append(name)
    if any(cp.name in forgotten for cp in site.controlplanes) and layout.cluster_record.exists():
        _unform(site, layout, store)
    return forgotten
