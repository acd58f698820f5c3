"""One node's way from powered off to installed, as a resumable state machine.

Each step is recorded in the node's state record *after* it completed, so a rerun
starts at the first step not yet done. Steps that may have happened while the tool
was dead (a node fetching its config) are recovered from the event log, never redone:
re-powering a node that is installing would reinstall it.

    blank -> powered-off -> pxe-set -> powered-on -> config-delivered -> installed -> ready
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..events import CONFIG_FETCH, EventLog
from ..inventory.model import ConfigDelivery, Node, Role, Site
from ..state import NodeRecord, Phase, StateStore
from . import talos_ops
from .progress import Progress

# A node in maintenance mode this long after its config was delivered did not install it.
MAINTENANCE_GRACE = 45.0
MAX_REAPPLY = 3
# A BMC step whose command retries were all used up is tried again this often.
BMC_STEP_ATTEMPTS = 3
BMC_STEP_PAUSE = 2.0


class NodeFailed(Exception):
    """The node cannot go on in this run; the message says why (no secrets in it)."""


@dataclass
class NodeRun:
    """Everything a node's flow needs, shared read-only with the other nodes."""

    site: Site
    node: Node
    store: StateStore
    events: EventLog
    progress: Progress
    configs_dir: Path
    talosconfig: Path
    bmc_slots: Callable[[Node], Any]  # -> async context manager limiting BMC concurrency
    poll: float = 2.0
    # Set when the cluster cannot form (a control plane failed): a worker waiting for its
    # installed OS would wait for a control-plane endpoint that never comes.
    cluster_failed: asyncio.Event | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def timeouts(self) -> Any:
        return self.site.cluster.timeouts


def _record(run: NodeRun, phase: Phase, detail: str = "", **changes: Any) -> NodeRecord:
    """Persist ``phase`` as completed, with the id of the event that announces it."""
    run.progress.step(run.name, phase.value, detail)
    return run.store.update(run.name, phase=phase, error=None, last_event=run.events.last_id(), **changes)


async def _bmc(run: NodeRun, what: str, fn: Callable[[Any], Any]) -> Any:
    """One BMC step. The controller already retries each command; a step that still fails
    with a transient fault (a BMC busy for longer than its retries) is given a few more
    chances after a pause before the node is failed, since every other step of the node
    would be wasted with it. Authentication and configuration errors fail at once."""
    from ..bmc.base import BMCError  # imported here: the BMC drivers pull in pyghmi/sushy

    for attempt in range(1, BMC_STEP_ATTEMPTS + 1):
        async with run.bmc_slots(run.node):
            try:
                return await asyncio.to_thread(_with_controller, run, fn)
            except BMCError as exc:  # carries node, endpoint and reason, never the password
                if not exc.transient or attempt == BMC_STEP_ATTEMPTS:
                    raise NodeFailed(f"BMC {what} failed: {exc}") from None
                run.progress.step(run.name, "bmc-retry", f"{what}: {exc}; trying again", "retry")
            except Exception as exc:
                raise NodeFailed(f"BMC {what} failed: {exc}") from None
        await asyncio.sleep(BMC_STEP_PAUSE * attempt)
    raise AssertionError("unreachable")


def _with_controller(run: NodeRun, fn: Callable[[Any], Any]) -> Any:
    """Connect, run ``fn``, and always close: a session left open holds a BMC slot (many
    BMCs allow only a handful) and the controller's worker thread."""
    from ..bmc import connect

    with connect(run.node, run.site.base_dir) as controller:
        return fn(controller)


async def power_off(run: NodeRun) -> NodeRecord:
    await _bmc(run, "power off", lambda c: c.power_off(soft=False))
    return _record(run, Phase.POWERED_OFF, "powered off")


async def set_pxe_once(run: NodeRun) -> NodeRecord:
    from ..bmc.base import BootDevice

    await _bmc(run, "boot device pxe", lambda c: c.set_boot_device(BootDevice.PXE, persistent=False))
    return _record(run, Phase.PXE_SET, "network boot once")


async def power_on(run: NodeRun) -> NodeRecord:
    await _bmc(run, "power on", lambda c: c.power_on())
    return _record(run, Phase.POWERED_ON, "powered on", extra={"powered_on_at": time.time()})


def _config_fetched_since(run: NodeRun, since: int) -> bool:
    return any(
        ev.kind == CONFIG_FETCH and ev.node == run.name and ev.outcome == "ok"
        for ev in run.events.iter(since, node=run.name)  # this node's new events only (indexed)
    )


async def wait_for_boot(run: NodeRun, rec: NodeRecord) -> NodeRecord:
    """Wait for the node to take its config: fetched over HTTP, or applied over the
    maintenance API. A node that stays silent is power-cycled a bounded number of times."""
    delivery = run.site.cluster.talos.config_delivery
    since = rec.last_event
    attempts = rec.attempts
    while True:
        deadline = time.monotonic() + run.timeouts.boot
        run.progress.step(
            run.name,
            "booting",
            f"waiting for {'config fetch' if delivery is ConfigDelivery.URL else 'maintenance API'}",
        )
        while time.monotonic() < deadline:
            if delivery is ConfigDelivery.URL:
                if _config_fetched_since(run, since):
                    return _record(run, Phase.CONFIG_DELIVERED, "config fetched over HTTP")
            elif await talos_ops.maintenance_ready(str(run.node.ip)):
                data = (run.configs_dir / f"{run.name}.yaml").read_bytes()
                await talos_ops.apply_config(str(run.node.ip), data)
                return _record(run, Phase.CONFIG_DELIVERED, "config applied over the maintenance API")
            await asyncio.sleep(run.poll)
        if attempts >= run.timeouts.boot_retries:
            raise NodeFailed(
                f"did not boot within {run.timeouts.boot:.0f}s after {attempts} power cycle(s): "
                "check its console, boot MAC and DHCP reservation"
            )
        attempts += 1
        run.progress.step(
            run.name, "power-cycle", f"no boot in {run.timeouts.boot:.0f}s, power cycle {attempts}", "retry"
        )
        since = run.events.last_id()  # only a fetch by the boot that follows counts
        await _bmc(run, "boot device pxe", _pxe_once)
        await _bmc(run, "power cycle", lambda c: c.power_cycle())
        rec = run.store.update(run.name, attempts=attempts)


def _pxe_once(controller: Any) -> None:
    from ..bmc.base import BootDevice

    controller.set_boot_device(BootDevice.PXE, persistent=False)


async def wait_installed(run: NodeRun) -> NodeRecord:
    """The installed OS answers over mutual TLS with the cluster's client certificate.

    A node that shows up in maintenance mode instead has lost its config on the way (an
    install cut short, say by the netboot service dying with a crashed run): it is given
    the config again over the maintenance API, a bounded number of times."""
    deadline = time.monotonic() + run.timeouts.install
    next_maintenance_check = time.monotonic() + MAINTENANCE_GRACE
    reapplied = 0
    run.progress.step(run.name, "installing", "waiting for the installed OS (mutual TLS)")
    while time.monotonic() < deadline:
        version = await talos_ops.secure_version(str(run.node.ip), run.talosconfig)
        if version is not None:
            return _record(run, Phase.INSTALLED, f"installed, answering as {version}", installed=True)
        if run.cluster_failed is not None and run.cluster_failed.is_set() and run.node.role is Role.WORKER:
            raise NodeFailed(
                "the control planes failed, so this worker cannot finish (it needs their endpoint)"
            )
        if time.monotonic() >= next_maintenance_check and reapplied < MAX_REAPPLY:
            next_maintenance_check = time.monotonic() + MAINTENANCE_GRACE
            if await talos_ops.maintenance_ready(str(run.node.ip)):
                reapplied += 1
                run.progress.step(
                    run.name,
                    "installing",
                    "node is in maintenance mode: applying its config over the API",
                    "retry",
                )
                data = (run.configs_dir / f"{run.name}.yaml").read_bytes()
                await talos_ops.apply_config(str(run.node.ip), data)
        await asyncio.sleep(run.poll)
    raise NodeFailed(f"the installed OS did not answer within {run.timeouts.install:.0f}s")


async def boot_from_disk(run: NodeRun) -> NodeRecord:
    from ..bmc.base import BootDevice

    await _bmc(run, "boot device disk", lambda c: c.set_boot_device(BootDevice.DISK, persistent=True))
    return _record(run, Phase.READY, "boots from disk (persistent)")


async def drive(run: NodeRun) -> NodeRecord:
    """Walk the node from its recorded phase to ready; raises NodeFailed."""
    rec = run.store.node(run.name)
    if rec.error:
        rec = run.store.save(replace(rec, error=None, attempts=0))
    while rec.phase is not Phase.READY:
        match rec.phase:
            case Phase.BLANK:
                rec = await power_off(run)
            case Phase.POWERED_OFF:
                rec = await set_pxe_once(run)
            case Phase.PXE_SET:
                rec = await power_on(run)
            case Phase.POWERED_ON:
                rec = await wait_for_boot(run, rec)
            case Phase.CONFIG_DELIVERED:
                rec = await wait_installed(run)
            case Phase.INSTALLED:
                rec = await boot_from_disk(run)
    return rec
