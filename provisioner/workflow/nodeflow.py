"""One node's way from powered off to installed, as a resumable state machine.

Each step is recorded in the node's state record *after* it completed, so a rerun
starts at the first step not yet done. Steps that may have happened while the tool
was dead (a node fetching its config) are recovered from the event log, never redone:
re-powering a node that is installing would reinstall it. A node whose record is blank but
which already answers over mutual TLS with this cluster's CA is installed: it is recorded
as such, never network-booted again.

    blank -> powered-off -> pxe-set -> powered-on -> config-delivered -> installed -> ready

These phase names are the node steps of ``plan``, ``status``, the state records and the
events. Everything comes from the run context: the BMC gate, the Talos access, the store.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..bmc import BMCController, BMCError, BootDevice
from ..events import CONFIG_FETCH
from ..inventory.model import ConfigDelivery, Node, Role, Timeouts
from ..state import NodeRecord, Phase
from ..talosapi.errors import TalosTLSError

if TYPE_CHECKING:
    from ..pipeline.context import RunContext
    from .bmcgate import BMCGate
    from .talos_ops import TalosAccess

# A node in maintenance mode this long after its config was delivered did not install it.
MAINTENANCE_GRACE = 45.0
MAX_REAPPLY = 3
# While a node installs (minutes on real hardware) it is probed once per poll interval: a probe of
# a node that refuses the connection is one socket connect (``TalosOps.secure_version``), so a
# steady pace costs little, and the install is noticed within one interval of its end (a growing
# pause, as before, noticed a 10 s install 4 s late).
# A BMC step whose command retries were all used up is tried again this often.
BMC_STEP_ATTEMPTS = 3
BMC_STEP_PAUSE = 2.0
# The BMC operations of a node's flow (bench-bmc runs the same), as picklable calls: the gate
# may run them in a worker process (``bmcprocs``).
POWER_OFF = operator.methodcaller("power_off", soft=False)
POWER_ON = operator.methodcaller("power_on")
POWER_CYCLE = operator.methodcaller("power_cycle")
PXE_ONCE = operator.methodcaller("set_boot_device", BootDevice.PXE, persistent=False)
DISK_ALWAYS = operator.methodcaller("set_boot_device", BootDevice.DISK, persistent=True)


# Threads for the nodes' durable writes (fsync'd event appends and record writes). asyncio's default
# pool has min(32, cores + 4): 6 on 2 cores, and 1,000 nodes' writes queued behind it while each
# node's next step (and its BMC slot) waited. With more, concurrent appends meet in the event log's
# group commit (one fsync for many) and record writes overlap on the disk.
DURABLE_THREADS = 32
_durable_pool: ThreadPoolExecutor | None = None


async def _durably(fn: Callable[[], Any]) -> Any:
    global _durable_pool
    if _durable_pool is None:
        _durable_pool = ThreadPoolExecutor(DURABLE_THREADS, thread_name_prefix="durable")
    return await asyncio.get_running_loop().run_in_executor(_durable_pool, fn)


class NodeFailed(Exception):
    """The node cannot go on in this run; the message says why (no secrets in it)."""


def _timeouts(ctx: RunContext) -> Timeouts:
    return ctx.site.cluster.timeouts


def _gate(ctx: RunContext) -> BMCGate:
    assert ctx.bmc is not None, "the run context has no BMC gate"
    return ctx.bmc


def _talos(ctx: RunContext) -> TalosAccess:
    assert ctx.talos is not None, "the run context has no Talos access"
    return ctx.talos


def _record_now(
    ctx: RunContext, node: Node, phase: Phase, detail: str, since: int | None, changes: dict[str, Any]
) -> NodeRecord:
    ctx.progress.step(node.name, phase.value, detail)
    last = ctx.events.last_id() if since is None else since
    return ctx.store.update(node.name, phase=phase, error=None, last_event=last, **changes)


async def _record(
    ctx: RunContext, node: Node, phase: Phase, detail: str = "", since: int | None = None, **changes: Any
) -> NodeRecord:
    """Persist ``phase`` as completed, with the id of the event that announces it (or ``since``:
    the last event before the step began, when what the step causes may be logged meanwhile).

    The event append and the record write each fsync (file and directory): done on the event
    loop they stalled every other node (113 s of fsync at 1,000 nodes), so they run in a worker
    thread. The node's own flow still waits for them: a step is recorded only after it completed,
    and the next step starts only once the record is durable."""
    return await _durably(lambda: _record_now(ctx, node, phase, detail, since, changes))


async def _step(ctx: RunContext, node: Node, phase: str, detail: str = "", outcome: str = "ok") -> None:
    """A progress step (an fsync'd event) written off the event loop; see ``_record``."""
    await _durably(lambda: ctx.progress.step(node.name, phase, detail, outcome))


async def _update(ctx: RunContext, name: str, **changes: Any) -> NodeRecord:
    """``StateStore.update`` (an fsync'd atomic write) off the event loop; see ``_record``."""
    return await _durably(lambda: ctx.store.update(name, **changes))


async def _bmc(
    ctx: RunContext, node: Node, what: str, fn: Callable[[BMCController], Any], keep: bool = False
) -> Any:
    """One BMC step. The controller already retries each command; a step that still fails
    with a transient fault (a BMC busy for longer than its retries) is given a few more
    chances after a pause before the node is failed, since every other step of the node
    would be wasted with it. Authentication and configuration errors fail at once. ``keep``
    leaves the BMC session open for the node's next step (off, PXE once, on: one login)."""
    for attempt in range(1, BMC_STEP_ATTEMPTS + 1):
        try:
            return await _gate(ctx).call(node, fn, keep=keep)
        except BMCError as exc:  # carries node, endpoint and reason, never the password
            if not exc.transient or attempt == BMC_STEP_ATTEMPTS:
                raise NodeFailed(f"BMC {what} failed: {exc}") from None
            await _step(ctx, node, "bmc-retry", f"{what}: {exc}; trying again", "retry")
        except Exception as exc:
            raise NodeFailed(f"BMC {what} failed: {exc}") from None
        await asyncio.sleep(BMC_STEP_PAUSE * attempt)
    raise AssertionError("unreachable")


async def power_off(ctx: RunContext, node: Node) -> NodeRecord:
    await _bmc(ctx, node, "power off", POWER_OFF, keep=True)
    return await _record(ctx, node, Phase.POWERED_OFF, "powered off")


async def set_pxe_once(ctx: RunContext, node: Node) -> NodeRecord:
    await _bmc(ctx, node, "boot device pxe", PXE_ONCE, keep=True)
    return await _record(ctx, node, Phase.PXE_SET, "network boot once")


async def power_on(ctx: RunContext, node: Node, rec: NodeRecord) -> NodeRecord:
    # The fetches that count are those after the one-time PXE was set (``rec`` is the pxe-set
    # record): only a boot that consumed it can make them. Not "after this command": a fast
    # machine fetches while the power-on is still being verified, and a run killed after the
    # command but before its record must, on the rerun, still see the fetch of that boot
    # (power on is then a no-op, and waiting for a fetch that already happened would end in
    # a power cycle of a node that is installing or installed).
    since = rec.last_event
    await _bmc(ctx, node, "power on", POWER_ON)
    return await _record(
        ctx, node, Phase.POWERED_ON, "powered on", since, extra={"powered_on_at": time.time()}
    )


def _config_fetched_since(ctx: RunContext, node: Node, since: int) -> bool:
    return any(
        ev.kind == CONFIG_FETCH and ev.node == node.name and ev.outcome == "ok"
        for ev in ctx.events.iter(since, node=node.name)  # this node's new events only (indexed)
    )


def _pin(ctx: RunContext, node: Node) -> str | None:
    pins: dict[str, str] = ctx.options.get("pins") or {}
    return pins.get(node.name)


def _may_apply(ctx: RunContext, node: Node) -> bool:
    """Whether a machine config may go over the maintenance API to ``node``'s address: only
    to a machine identified by the certificate pin its console shows (``--pin``), or when the
    operator accepted the risk (``--insecure-apply``). A control-plane config carries the
    cluster's CA keys; whatever answers TLS on the address must not get it by default."""
    return _pin(ctx, node) is not None or bool(ctx.options.get("insecure_apply"))


async def _apply(ctx: RunContext, node: Node) -> None:
    pin = _pin(ctx, node)
    if pin is None:
        if not ctx.options.get("insecure_apply"):
            raise NodeFailed(
                f"refusing to send its machine config (it carries the cluster's keys) to whatever "
                f"answers on {node.ip}:50000 in maintenance mode: give the certificate pin the node "
                f"shows on its console with --pin {node.name}=<sha256>, or accept the risk with "
                "--insecure-apply"
            )
        await _step(ctx, node, "identity", "applying without an identity check (--insecure-apply)", "warning")
    data = ctx.layout.config(node.name).read_bytes()
    try:
        await _talos(ctx).apply_config(str(node.ip), data, pin)
    except TalosTLSError as exc:
        if pin is None:
            raise
        raise NodeFailed(
            f"the machine answering on {node.ip} is not {node.name} (its certificate does not match "
            f"--pin): no config was sent ({exc.detail})"
        ) from None


async def wait_for_boot(ctx: RunContext, node: Node, rec: NodeRecord) -> NodeRecord:
    """Wait for the node to take its config: fetched over HTTP, or applied over the
    maintenance API. A node that stays silent is power-cycled a bounded number of times."""
    delivery = ctx.site.cluster.talos.config_delivery
    timeouts = _timeouts(ctx)
    since = rec.last_event
    attempts = rec.attempts
    while True:
        deadline = time.monotonic() + timeouts.boot
        await _step(
            ctx,
            node,
            "booting",
            f"waiting for {'config fetch' if delivery is ConfigDelivery.URL else 'maintenance API'}",
        )
        while time.monotonic() < deadline:
            if delivery is ConfigDelivery.URL:
                if _config_fetched_since(ctx, node, since):
                    return await _record(ctx, node, Phase.CONFIG_DELIVERED, "config fetched over HTTP")
            elif await _talos(ctx).maintenance_ready(str(node.ip)):
                await _apply(ctx, node)
                return await _record(
                    ctx, node, Phase.CONFIG_DELIVERED, "config applied over the maintenance API"
                )
            if delivery is ConfigDelivery.URL:  # woken by the fetch's event, else one interval
                await ctx.watch.wait(node.name, min(ctx.poll, max(0.0, deadline - time.monotonic())))
            else:
                await asyncio.sleep(ctx.poll)
        if await _talos(ctx).secure_version(str(node.ip)) is not None:
            # Installed although no fetch was seen (a fetch logged while the tool was down and
            # the log rotated, say): never power-cycle an installed node into the network boot.
            return await _record(
                ctx, node, Phase.CONFIG_DELIVERED, "already installed (answers over mutual TLS)"
            )
        if attempts >= timeouts.boot_retries:
            raise NodeFailed(
                f"did not boot within {timeouts.boot:.0f}s after {attempts} power cycle(s): "
                "check its console, boot MAC and DHCP reservation"
            )
        attempts += 1
        await _step(
            ctx, node, "power-cycle", f"no boot in {timeouts.boot:.0f}s, power cycle {attempts}", "retry"
        )
        since = ctx.events.last_id()  # only a fetch by the boot that follows counts
        await _bmc(ctx, node, "boot device pxe", PXE_ONCE, keep=True)
        await _bmc(ctx, node, "power cycle", POWER_CYCLE)
        rec = await _update(ctx, node.name, attempts=attempts)


async def wait_installed(ctx: RunContext, node: Node) -> NodeRecord:
    """The installed OS answers over mutual TLS with the cluster's client certificate.

    A node that shows up in maintenance mode instead has lost its config on the way (an
    install cut short, say by the netboot service dying with a crashed run): it is given
    the config again over the maintenance API, a bounded number of times."""
    timeouts = _timeouts(ctx)
    deadline = time.monotonic() + timeouts.install
    next_maintenance_check = time.monotonic() + MAINTENANCE_GRACE
    reapplied = 0
    await _step(ctx, node, "installing", "waiting for the installed OS (mutual TLS)")
    while time.monotonic() < deadline:
        version = await _talos(ctx).secure_version(str(node.ip))
        if version is not None:
            return await _record(
                ctx, node, Phase.INSTALLED, f"installed, answering as {version}", installed=True
            )
        if ctx.cluster_failed.is_set() and node.role is Role.WORKER:
            raise NodeFailed(
                "the control planes failed, so this worker cannot finish (it needs their endpoint)"
            )
        if time.monotonic() >= next_maintenance_check and reapplied < MAX_REAPPLY:
            next_maintenance_check = time.monotonic() + MAINTENANCE_GRACE
            if await _talos(ctx).maintenance_ready(str(node.ip)):
                reapplied += 1
                if _may_apply(ctx, node):
                    await _step(
                        ctx,
                        node,
                        "installing",
                        "node is in maintenance mode: applying its config over the API",
                        "retry",
                    )
                    await _apply(ctx, node)
                else:  # URL delivery: boot it again, so it fetches the config only its address gets
                    await _step(
                        ctx,
                        node,
                        "installing",
                        "node is in maintenance mode: network-booting it again to fetch its config",
                        "retry",
                    )
                    await _bmc(ctx, node, "boot device pxe", PXE_ONCE, keep=True)
                    await _bmc(ctx, node, "power cycle", POWER_CYCLE)
        await asyncio.sleep(min(ctx.poll, max(0.0, deadline - time.monotonic())))
    raise NodeFailed(f"the installed OS did not answer within {timeouts.install:.0f}s")


async def boot_from_disk(ctx: RunContext, node: Node) -> NodeRecord:
    await _bmc(ctx, node, "boot device disk", DISK_ALWAYS)
    return await _record(ctx, node, Phase.READY, "boots from disk (persistent)")


async def _already_installed(ctx: RunContext, node: Node) -> NodeRecord | None:
    """A blank record for a node that answers over mutual TLS (state lost, or installed by an
    earlier tool): record it installed instead of network-booting it into a reinstall."""
    version = await _talos(ctx).secure_version(str(node.ip))
    if version is None:
        return None
    return await _record(
        ctx,
        node,
        Phase.INSTALLED,
        f"already installed (answers over mutual TLS as {version})",
        installed=True,
    )


async def drive(ctx: RunContext, node: Node) -> NodeRecord:
    """Walk the node from its recorded phase to ready; raises NodeFailed."""
    try:
        return await _drive(ctx, node)
    finally:  # a step that failed (or was interrupted) may leave the node's BMC session open
        if ctx.bmc is not None:
            await ctx.bmc.release(node)


async def _drive(ctx: RunContext, node: Node) -> NodeRecord:
    rec = ctx.store.node(node.name)
    if rec.error:
        cleared = replace(rec, error=None, attempts=0)
        rec = await _durably(lambda: ctx.store.save(cleared))
    if rec.phase is Phase.BLANK:
        rec = await _already_installed(ctx, node) or rec
    while rec.phase is not Phase.READY:
        match rec.phase:
            case Phase.BLANK:
                rec = await power_off(ctx, node)
            case Phase.POWERED_OFF:
                rec = await set_pxe_once(ctx, node)
            case Phase.PXE_SET:
                rec = await power_on(ctx, node, rec)
            case Phase.POWERED_ON:
                rec = await wait_for_boot(ctx, node, rec)
            case Phase.CONFIG_DELIVERED:
                rec = await wait_installed(ctx, node)
            case Phase.INSTALLED:
                rec = await boot_from_disk(ctx, node)
    return rec
