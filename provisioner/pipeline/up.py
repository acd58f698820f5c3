"""`provisioner up`: build the run context once, then walk the bundle's stages in order.

It sits above both the stages (``stages.py``) and the work they call (``provisioner/workflow/``),
so neither of those imports it.

The stages themselves are listed in ``provisioner/pipeline/stages.py``; this module only
sets a run up (locks, progress, the BMC gate, the Talos access, the netboot service) and
turns what the run left behind into a per-node summary. Nodes run side by side; one node's
failure never stops the others. The CLI exits 1 if any node, the cluster or a stage failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..bmc import ControllerSettings
from ..errors import InputError
from ..inventory.model import Node, Site
from ..layout import StateLayout
from ..state import Phase, StateStore
from ..workflow.bmcgate import BMCGate, Connect, default_processes
from ..workflow.bmcprocs import BMCProcesses
from ..workflow.locks import hold_racks
from ..workflow.progress import Progress
from ..workflow.talos_ops import TalosAccess, TalosOps
from .base import Stage
from .context import NetbootFactory, NodeOutcome, RunContext
from .runner import walk
from .stages import PLATFORM_STAGES, STAGES

PLATFORM_STAGE_NAMES = frozenset(s.name for s in PLATFORM_STAGES)

__all__ = ["NodeOutcome", "UpResult", "up"]


@dataclass
class UpResult:
    nodes: list[NodeOutcome] = field(default_factory=list)
    cluster: str = "skipped"  # formed | skipped | failed | waiting | hosted
    cluster_error: str | None = None
    kubeconfig: str | None = None
    seconds: float = 0.0
    stages: dict[str, str] = field(default_factory=dict)  # stage name -> status in this run
    stage_error: str | None = None
    bundle: str = ""
    platform: str = "not installed"  # ready | failed | not installed (a stage not reached or --until)

    @property
    def ok(self) -> bool:
        return (
            all(n.ok for n in self.nodes)
            and self.cluster in ("formed", "waiting", "hosted")
            and self.stage_error is None
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "cluster": self.cluster,
            "cluster_error": self.cluster_error,
            "kubeconfig": self.kubeconfig,
            "seconds": round(self.seconds, 1),
            "stages": [{"name": k, "status": v} for k, v in self.stages.items()],
            "stage_error": self.stage_error,
            "bundle": self.bundle,
            "platform": self.platform,
            "nodes": [n.__dict__ for n in self.nodes],
        }


def _netboot(ctx: RunContext, pending: list[Node]) -> contextlib.AbstractContextManager[Any]:
    # The site's service is shared with concurrent runs (another rack's `up`): the first run
    # starts it, later ones attach, it stops when the last leaves.
    from ..netboot.shared import SharedNetboot
    from .boot_servers import BootServers  # racks behind boot servers: pushed and linked live

    with contextlib.ExitStack() as stack:  # a failure while entering closes what was entered
        stack.enter_context(SharedNetboot(ctx.site, pending))
        if any(r.boot_server is not None for r in ctx.site.racks):
            stack.enter_context(BootServers(ctx, pending))
        return stack.pop_all()


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: asyncio cancels every task (each step not yet
    recorded is redone by the next run), the netboot service and locks are released, and no
    thread stuck in a BMC command is waited for (they are daemons, see ``BMCGate.call``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        # Before and after the event loop (inside it, ``_cancel_on_sigterm`` takes over).
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            raise KeyboardInterrupt  # a background job of a script: SIGINT is ignored there
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cancel_on_sigterm(terminated: threading.Event) -> None:
    """Inside the event loop, SIGTERM cancels the main task, as the runner does for Ctrl-C: each
    step not yet recorded is redone by the next run. Not by way of SIGINT: a background job of a
    non-interactive shell (``make rack-r1 & make rack-r2``) inherits SIGINT ignored, so asyncio
    installs no SIGINT handler and a SIGTERM handed on as SIGINT was lost (the run went on)."""
    if threading.current_thread() is not threading.main_thread():
        return
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        terminated.set()
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, cancel)


@contextlib.contextmanager
def _bmc_workers(site: Site, count: int, concurrency: int) -> Iterator[BMCProcesses | None]:
    """The run's BMC worker processes, started before the first stage: they load their libraries
    while the secrets, configs and netboot stages run, not while the first BMC calls wait."""
    if count <= 0:
        yield None
        return
    settings = ControllerSettings.for_node_timeout(site.cluster.timeouts.bmc_command)
    procs = BMCProcesses(count, site.base_dir, settings, threads=concurrency)
    try:
        procs.start(wait=False)
        yield procs
    finally:
        procs.close()


def _walks_to(stages: Sequence[Stage], site: Site, name: str, until: str | None) -> bool:
    """Whether this run's walk reaches stage ``name`` (the bundle has it, ``--until`` is not before it)."""
    for stage in stages:
        if not stage.applies(site.cluster.bundle_spec):
            continue
        if stage.name == name:
            return True
        if stage.name == until:
            return False
    return False


@contextlib.contextmanager
def _netboot_warmed(site: Site, pending: list[Node], warm: bool) -> Iterator[None]:
    """The site's netboot daemon started before the first stage, serving nothing yet
    (``SharedNetboot.warm``): its interpreter, imports and inventory load overlap the secrets and
    machine-configs stages instead of holding the netboot stage (about a second at 1,000 nodes).
    Only when the netboot stage will start it: the run's own service, a node still to boot."""
    if not warm or not pending:
        yield
        return
    from ..netboot.shared import SharedNetboot

    member = SharedNetboot(site, pending)
    member.warm()
    try:
        yield
    finally:
        member.leave()


def _bmc_fan_out(store: StateStore, nodes: list[Node]) -> int:
    """The nodes this run may still drive through their BMC: one in the inventory, not yet ready
    (a rerun of a built site for its platform stages touches no BMC and needs no worker). A
    malformed record raises here, as ``StateStore.check`` would a moment later (exit 2); the
    check then finds every record already read by this ``store`` (a stat each, no second read)."""
    return sum(1 for n in nodes if n.bmc is not None and store.node(n.name).phase is not Phase.READY)


def up(
    site: Site,
    nodes: list[Node],
    progress_mode: str = "auto",
    bmc_concurrency: int = 32,
    per_rack: int = 8,
    poll: float = 2.0,
    *,
    bmc_processes: int | None = None,
    talos: TalosAccess | None = None,
    bmc_connect: Connect | None = None,
    netboot: NetbootFactory | None = _netboot,
    stages: Sequence[Stage] = STAGES,
    options: dict[str, Any] | None = None,
) -> UpResult:
    """Run the pipeline for the selected ``nodes``. ``talos``, ``bmc_connect`` and ``netboot``
    are the test seams (fake machine API, fake BMC drivers, no netboot service).
    ``bmc_processes``: BMC worker processes (0: the run's own threads; None: ``bmcgate``'s
    ``default_processes`` for the nodes still to drive and this machine)."""
    started = time.monotonic()
    hosted = site.cluster.bundle_spec.hosted
    if hosted:
        assert site.hosted is not None
        kubeconfig = site.base_dir / site.hosted.kubeconfig
        if not kubeconfig.is_file():
            raise InputError(f"hosted.kubeconfig: {kubeconfig} does not exist")
    result = UpResult()
    terminated = threading.Event()
    store = StateStore(site.state_dir)
    if hosted or bmc_connect is not None:
        workers = 0
    elif bmc_processes is None:
        workers = default_processes(_bmc_fan_out(store, nodes))
    else:
        workers = bmc_processes
    with (
        _bmc_workers(site, workers, bmc_concurrency) as procs,
        _sigterm_interrupts(),
        Progress(None, progress_mode) as progress,
        hold_racks(StateLayout(site.state_dir), [] if hosted else [n.rack for n in nodes]),
    ):
        if not hosted:  # a malformed record stops the run here (exit 2), before any machine is touched
            store.check([n.name for n in nodes])
        warm = netboot is _netboot and _walks_to(stages, site, "netboot", (options or {}).get("until"))
        pending = [n for n in nodes if store.node(n.name).phase is not Phase.READY] if warm else []

        async def main() -> RunContext:
            _cancel_on_sigterm(terminated)
            ctx = RunContext.for_site(
                site, progress, nodes=list(nodes), poll=poll, options=dict(options or {})
            )
            progress.events = ctx.events
            ctx.netboot = netboot
            ctx.talos = talos or TalosOps(ctx.layout.talosconfig)
            ctx.bmc = BMCGate(site, bmc_concurrency, per_rack, connect_fn=bmc_connect, processes=procs or 0)
            if hosted:
                ctx.cluster_status = "hosted"
            try:
                result.stage_error = await walk(ctx, stages)
            finally:
                ctx.bmc.close()
            return ctx

        try:
            with _netboot_warmed(site, pending, warm):
                ctx = asyncio.run(main())
        except asyncio.CancelledError:
            if terminated.is_set():
                raise KeyboardInterrupt from None  # the CLI ends it as it ends Ctrl-C (exit 130)
            raise
    for n in nodes if not hosted else []:
        rec = ctx.store.node(n.name)
        outcome = ctx.outcomes.get(n.name)
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
    result.cluster, result.cluster_error = ctx.cluster_status, ctx.cluster_error
    if result.cluster == "skipped" and ctx.stages.get("cluster") == "done":
        result.cluster = "formed"  # recorded as formed by an earlier run
    if result.cluster in ("formed", "hosted") and ctx.kubeconfig is not None:
        result.kubeconfig = str(ctx.kubeconfig)
    result.stages = dict(ctx.stages)
    result.bundle, result.platform = site.cluster.bundle, platform_verdict(site, stages, ctx.stages)
    result.seconds = time.monotonic() - started
    return result


def platform_verdict(site: Site, stages: Sequence[Stage], statuses: dict[str, str]) -> str:
    """ "ready" when every platform stage the bundle has is done (in this run or recorded by an
    earlier one), "failed" when one failed, "not installed" otherwise."""
    bundle = site.cluster.bundle_spec
    names = [s.name for s in stages if s.name in PLATFORM_STAGE_NAMES and s.applies(bundle)]
    if not names:
        return "not installed"
    if any(statuses.get(n) == "failed" for n in names):
        return "failed"
    return "ready" if all(statuses.get(n) == "done" for n in names) else "not installed"
