"""The pipeline: every stage ``up`` walks, in order, under the one set of stage names.

    secrets -> machine-configs -> netboot -> nodes -> cluster            (bundles that install Talos)
    -> api-ready -> contract -> installer-assets -> helmreleases
    -> storage -> virtualization -> networking -> tenants        (the Cozystack platform)

Hosted bundles (an existing Kubernetes) skip the hardware stages, because none of them
applies, and begin at the first Kubernetes stage, ``api-ready``. ``plan``, ``status``, the
state records, the ``pipeline.stage`` events and ``docs/architecture.md`` use these names;
a node's own steps inside ``nodes`` are the phases of ``state.Phase``.

The hardware stages' work lives in ``provisioner/workflow/`` (node flow, cluster formation);
a stage here only decides whether it applies, whether it is done, and calls into it.
"""

from __future__ import annotations

import asyncio
import os
import time

from ..bundles import Bundle
from ..cozystack.stages import PLATFORM_STAGES
from ..inventory.model import Node
from ..layout import StateLayout
from ..state import Phase
from ..workflow import clusterflow, nodeflow
from ..workflow.locks import LockBusy, cluster_lock, holder
from .base import Stage, StageFailed
from .context import NodeOutcome, RunContext


class SecretsStage:
    """The cluster's secrets bundle, generated once (never replaced)."""

    name = "secrets"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.provisions_talos

    def done(self, layout: StateLayout) -> bool:
        return layout.secrets.is_file()

    async def run(self, ctx: RunContext) -> None:
        from ..fsutil import locked
        from ..talos.secrets import ensure_secrets

        with locked(ctx.layout.site_lock):  # two racks' runs: one generates, one reads
            ensure_secrets(ctx.site)


class ConfigsStage:
    """Machine configs and the admin talosconfig. Always re-rendered (the inventory may have
    changed); unchanged files are not rewritten, so a rerun costs little and touches nothing."""

    name = "machine-configs"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.provisions_talos

    def done(self, layout: StateLayout) -> bool:
        return False

    async def run(self, ctx: RunContext) -> None:
        from ..fsutil import locked
        from ..talos.configs import generate_configs

        # Under the site lock: concurrent runs (one per rack) never write a config at once;
        # unchanged files are not rewritten.
        with locked(ctx.layout.site_lock):
            generate_configs(ctx.site)


class NetbootStage:
    """The netboot service (DHCP/TFTP/HTTP), started for the nodes not yet ready and kept up
    for the rest of the run (closed by ``ctx.resources``)."""

    name = "netboot"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.provisions_talos

    def done(self, layout: StateLayout) -> bool:
        return False  # a service, not a result: it runs whenever a node still has to boot

    async def run(self, ctx: RunContext) -> None:
        pending = [n for n in ctx.selected if ctx.store.node(n.name).phase is not Phase.READY]
        if not pending:
            ctx.progress.stage(self.name, "skipped", "every selected node is ready")
            return
        if ctx.netboot is not None:
            ctx.resources.enter_context(ctx.netboot(ctx, pending))


class NodesStage:
    """Every selected node through the node flow, side by side; cluster formation starts beside
    them as soon as the control planes are installed (workers need the control-plane endpoint,
    the VIP, which comes up with etcd, exactly as on real Talos). One node's failure never
    stops the others; the outcomes are reported per node."""

    name = "nodes"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.provisions_talos

    def done(self, layout: StateLayout) -> bool:
        return False  # per node: each node's record says where it stands

    async def run(self, ctx: RunContext) -> None:
        pending = [n for n in ctx.selected if ctx.store.node(n.name).phase is not Phase.READY]
        for node in ctx.selected:
            ctx.progress.add(node.name, node.rack, ctx.store.node(node.name).phase.value)
        forming = asyncio.create_task(form_when_ready(ctx, {n.name for n in pending}))
        await asyncio.gather(*(_drive(ctx, n) for n in pending))
        await forming


async def _drive(ctx: RunContext, node: Node) -> None:
    t0 = time.monotonic()
    try:
        rec = await nodeflow.drive(ctx, node)
        ctx.outcomes[node.name] = NodeOutcome(
            node.name, node.rack, rec.phase.value, True, None, time.monotonic() - t0
        )
        return
    except nodeflow.NodeFailed as exc:
        msg = str(exc)
    except Exception as exc:  # a bug in one node's flow must not stop the others
        msg = f"unexpected {type(exc).__name__}: {exc}"
    rec = ctx.store.update(node.name, error=msg)
    ctx.progress.step(node.name, rec.phase.value, msg, "error")
    ctx.outcomes[node.name] = NodeOutcome(
        node.name, node.rack, rec.phase.value, False, msg, time.monotonic() - t0
    )


async def form_when_ready(ctx: RunContext, in_run: set[str]) -> None:
    """Wait until every control plane is installed, then form the cluster once; the result goes
    to ``ctx.cluster_status`` / ``ctx.cluster_error`` (read by the ``cluster`` stage)."""
    site, store = ctx.site, ctx.store
    announced = ""
    while True:
        cps = [(cp.name, store.node(cp.name)) for cp in site.controlplanes]
        if all(rec.phase.order >= Phase.INSTALLED.order for _, rec in cps):
            break
        failed = [name for name, _ in cps if name in ctx.outcomes and not ctx.outcomes[name].ok]
        if failed:
            ctx.cluster_failed.set()
            ctx.cluster_status, ctx.cluster_error = (
                "failed",
                f"control planes failed to install: {', '.join(failed)}",
            )
            ctx.progress.cluster("failed", ctx.cluster_error, "error")
            return
        outside = [
            name for name, rec in cps if name not in in_run and rec.phase.order < Phase.INSTALLED.order
        ]
        if outside:
            # Racks provisioned in parallel: another run holding a control plane's rack will
            # install it (a dead run's lock is gone, so this never waits on nobody).
            busy = _racks_in_progress(ctx, outside)
            if not busy:
                ctx.cluster_status = "waiting"
                missing = ", ".join(outside)
                ctx.progress.cluster(
                    "waiting", f"control planes outside this selection are not installed: {missing}"
                )
                return
            if busy != announced:
                ctx.progress.cluster("waiting", f"control planes being installed by other runs: {busy}")
                announced = busy
        await asyncio.sleep(ctx.poll)
    try:
        # Concurrent runs (one per rack) meet here: whoever holds the lock forms the cluster,
        # the others wait for it, then find each step done (bootstrap is guarded by the record).
        while True:
            try:
                lock = cluster_lock(ctx.layout)
                lock.__enter__()
                break
            except LockBusy:
                if announced != "cluster lock":
                    ctx.progress.cluster("waiting", "another run is forming the cluster")
                    announced = "cluster lock"
                await asyncio.sleep(ctx.poll)
        try:
            await clusterflow.form(ctx)
        finally:
            lock.__exit__(None, None, None)
        ctx.cluster_status, ctx.cluster_error = "formed", None
    except Exception as exc:  # reported per run, never a traceback
        ctx.cluster_failed.set()
        ctx.cluster_status, ctx.cluster_error = "failed", str(exc)
        ctx.progress.cluster("failed", str(exc), "error")


def _racks_in_progress(ctx: RunContext, names: list[str]) -> str:
    """``rack r1 (pid 123): cp1, cp2`` for the nodes whose rack another live run holds; empty
    when none is held."""
    by_rack: dict[str, list[str]] = {}
    for name in names:
        by_rack.setdefault(ctx.site.node(name).rack, []).append(name)
    held = []
    for rack, nodes in sorted(by_rack.items()):
        pid = holder(ctx.layout.rack_lock(rack))
        if pid is not None and pid != os.getpid():
            held.append(f"rack {rack} (pid {pid}): {', '.join(nodes)}")
    return "; ".join(held)


class ClusterStage:
    """etcd bootstrapped exactly once, every control plane a voting member, the kubeconfig
    written. Usually finished beside ``nodes``; run on its own when every node was ready."""

    name = "cluster"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.provisions_talos

    def done(self, layout: StateLayout) -> bool:
        return clusterflow.ClusterState.load(layout.cluster_record).formed and layout.kubeconfig.is_file()

    async def run(self, ctx: RunContext) -> None:
        if ctx.cluster_status == "skipped":  # ``nodes`` had nothing to do: form from here
            await form_when_ready(ctx, {n.name for n in ctx.selected})
        if ctx.cluster_status == "failed":
            raise StageFailed(f"cluster: {ctx.cluster_error}")
        if ctx.cluster_status == "waiting":
            ctx.halt = "control planes outside this selection are not installed yet"


HARDWARE_STAGES: tuple[Stage, ...] = (
    SecretsStage(),
    ConfigsStage(),
    NetbootStage(),
    NodesStage(),
    ClusterStage(),
)

STAGES: tuple[Stage, ...] = (*HARDWARE_STAGES, *PLATFORM_STAGES)


def stages_for(bundle: Bundle) -> list[Stage]:
    """The stages ``up`` walks for ``bundle``, in order."""
    return [s for s in STAGES if s.applies(bundle)]


def stage_names(bundle: Bundle) -> list[str]:
    return [s.name for s in stages_for(bundle)]
