"""BMC commands: ``power status|on|off|cycle``, ``bootdev pxe|disk``, ``bmc identify``.

All act on the nodes chosen by the global ``--rack``/``--node`` (default: every node),
in parallel within ``--concurrency``/``--per-rack``, and end with one line per node.
Exit 1 when any node failed (the others were still done), 0 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..bmc import BootDevice, ControllerSettings, Identity, NodeResult, connect, run_on_nodes
from ..errors import OperationError
from ..inventory.model import Node
from .context import App, pass_app
from .output import emit

_fanout_options = [
    click.option(
        "--concurrency",
        type=click.IntRange(1, 1024),
        default=32,
        show_default=True,
        help="Nodes handled at once, overall.",
    ),
    click.option(
        "--per-rack",
        type=click.IntRange(1, 1024),
        default=8,
        show_default=True,
        help="Nodes handled at once within one rack.",
    ),
]


def _fanout(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(_fanout_options):
        f = opt(f)
    return f


def register(cli: click.Group) -> None:
    cli.add_command(power)
    cli.add_command(bootdev)
    cli.add_command(bmc)


def _run(
    app: App,
    action: str,
    fn: Callable[[Any, Node], Any],
    concurrency: int,
    per_rack: int,
    text_value: Callable[[Any], str] = str,
) -> dict[str, NodeResult]:
    site = app.site
    nodes = app.selected()
    settings = ControllerSettings.for_node_timeout(site.cluster.timeouts.bmc_command)

    def task(node: Node) -> Any:
        with connect(node, site.base_dir, settings) as ctl:
            return fn(ctl, node)

    results = run_on_nodes(nodes, task, concurrency=concurrency, per_rack=per_rack)
    data = {
        "action": action,
        "results": [r.as_dict() for r in results.values()],
        "failed": sum(not r.ok for r in results.values()),
    }

    def text(d: dict[str, Any]) -> str:
        lines = []
        for r in results.values():
            if r.ok:
                lines.append(f"{r.node:<20} ok      {text_value(r.value)}".rstrip())
            else:
                lines.append(f"{r.node:<20} FAILED  {r.error}")
        lines.append(f"{action}: {len(results) - d['failed']} ok, {d['failed']} failed")
        return "\n".join(lines)

    emit(data, text)
    if data["failed"]:
        raise OperationError(f"{action}: {data['failed']} of {len(results)} nodes failed (see above)")
    return results


@click.group()
def power() -> None:
    """Read or change node power through the BMC."""


@power.command("status")
@_fanout
@pass_app
def power_status(app: App, concurrency: int, per_rack: int) -> None:
    """Show each node's power state."""
    _run(app, "power status", lambda c, _n: c.power_state().value, concurrency, per_rack)


@power.command("on")
@_fanout
@pass_app
def power_on(app: App, concurrency: int, per_rack: int) -> None:
    """Power nodes on and wait until the BMC reports them on."""
    _run(app, "power on", lambda c, _n: c.power_on(), concurrency, per_rack, lambda _v: "")


@power.command("off")
@click.option("--soft", is_flag=True, help="Ask the OS to shut down (ACPI) instead of cutting power.")
@_fanout
@pass_app
def power_off(app: App, soft: bool, concurrency: int, per_rack: int) -> None:
    """Power nodes off and wait until the BMC reports them off."""
    _run(app, "power off", lambda c, _n: c.power_off(soft=soft), concurrency, per_rack, lambda _v: "")


@power.command("cycle")
@_fanout
@pass_app
def power_cycle(app: App, concurrency: int, per_rack: int) -> None:
    """Power nodes off and on again (nodes that are off are powered on)."""
    _run(app, "power cycle", lambda c, _n: c.power_cycle(), concurrency, per_rack, lambda _v: "")


@click.command()
@click.argument("device", type=click.Choice([d.value for d in BootDevice]))
@click.option("--persistent", is_flag=True, help="Keep the device for every boot (default: next boot only).")
@click.option("--uefi/--bios", "uefi", default=None, help="Boot mode (default: the node's boot.mode).")
@_fanout
@pass_app
def bootdev(
    app: App, device: str, persistent: bool, uefi: bool | None, concurrency: int, per_rack: int
) -> None:
    """Set the device nodes boot from: pxe or disk."""
    _run(
        app,
        f"bootdev {device}",
        lambda c, _n: c.set_boot_device(BootDevice(device), persistent=persistent, uefi=uefi),
        concurrency,
        per_rack,
        lambda _v: "",
    )


@click.group()
def bmc() -> None:
    """BMC inspection."""


def identity_mismatches(node: Node, ident: Identity) -> list[str]:
    """What the BMC reports that contradicts the inventory (wrong UUID, unknown MAC, serial)."""
    problems = []
    if node.uuid and ident.uuid and node.uuid.lower() != ident.uuid.lower():
        problems.append(f"UUID is {ident.uuid}, inventory says {node.uuid}")
    if node.serial and ident.serial and node.serial != ident.serial:
        problems.append(f"serial is {ident.serial}, inventory says {node.serial}")
    if ident.macs and node.boot.mac.lower() not in {m.lower() for m in ident.macs}:
        problems.append(
            f"boot MAC {node.boot.mac} is unknown to the BMC (it reports {', '.join(ident.macs)})"
        )
    return problems


@bmc.command("identify")
@_fanout
@pass_app
def bmc_identify(app: App, concurrency: int, per_rack: int) -> None:
    """Read each node's identity from its BMC and report mismatches with the inventory."""

    def fn(ctl: Any, node: Node) -> dict[str, Any]:
        ident = ctl.identity()
        problems = identity_mismatches(node, ident)
        if problems:
            raise OperationError(
                f"node {node.name}: BMC {ctl.endpoint}: identity mismatch: " + "; ".join(problems)
            )
        return ident.as_dict()

    def text(v: dict[str, Any]) -> str:
        return " ".join(f"{k}={','.join(x) if isinstance(x, list) else x}" for k, x in v.items() if x)

    _run(app, "bmc identify", fn, concurrency, per_rack, text)
