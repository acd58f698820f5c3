"""Cluster formation commands: up, status, reset."""

from __future__ import annotations

import time
from typing import Any

import click

from ..errors import OperationError
from ..events import EventLog
from ..records import MalformedState
from ..state import NodeRecord, StateStore
from .context import App, pass_app
from .output import emit


def register(cli: click.Group) -> None:
    cli.add_command(up)
    cli.add_command(status)
    cli.add_command(reset)


@click.command()
@click.option(
    "--bmc-concurrency", type=click.IntRange(1, 1024), default=32, show_default=True,
    help="BMC commands in flight at once (>= 1; 0 would wait forever).",
)
@click.option(
    "--per-rack", type=click.IntRange(1, 1024), default=8, show_default=True,
    help="BMC commands in flight per rack (>= 1).",
)
@click.option(
    "--bmc-processes", type=click.IntRange(0, 64), default=None,
    show_default="1 for 200 or more nodes still to provision, on 2 or more cores; else 0",
    help="Worker processes for the BMC protocol libraries (0: in this process). More spread "
    "their CPU over the cores for a large fan-out, at 50-60 MB each.",
)
@click.option(
    "--progress",
    "progress_mode",
    type=click.Choice(["auto", "live", "lines", "json"]),
    default="auto",
    help="Progress display (json with --output json).",
)
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="NODE=SHA256",
    help="The certificate pin a node in maintenance mode shows on its console: its config is "
    "sent over the maintenance API only to the machine holding that key (repeatable).",
)
@click.option(
    "--insecure-apply",
    is_flag=True,
    help="Send configs over the maintenance API without checking the machine's identity (logged).",
)
@click.option(
    "--until",
    metavar="STAGE",
    default=None,
    help="Stop after this stage (e.g. `cluster`: form the cluster, install no platform); "
    "a later `up` resumes from there.",
)
@click.option(
    "--keep-boot-servers",
    is_flag=True,
    help="Leave the netboot service on racks' boot servers running when the run ends.",
)
@pass_app
def up(
    app: App,
    bmc_concurrency: int,
    per_rack: int,
    bmc_processes: int | None,
    progress_mode: str,
    pins: tuple[str, ...],
    insecure_apply: bool,
    keep_boot_servers: bool,
    until: str | None,
) -> int:
    """Provision the selected nodes and form the cluster; rerun to resume."""
    from ..pipeline.up import up as run_up

    site = app.site
    nodes = app.selected()
    options: dict[str, Any] = {"pins": _parse_pins(site, pins), "insecure_apply": insecure_apply}
    options["keep_boot_servers"] = keep_boot_servers  # racks behind boot servers (pipeline.boot_servers)
    if until is not None:
        from ..pipeline.stages import stage_names

        names = stage_names(site.cluster.bundle_spec)
        if until not in names:
            raise click.BadParameter(
                f"{until!r} is not a stage of bundle {site.cluster.bundle.value}; stages: {', '.join(names)}",
                param_hint="--until",
            )
        options["until"] = until
    # Said first, on stderr: a run from an unexpected directory shows which state it uses.
    click.echo(f"state directory: {site.state_dir}", err=True)
    StateStore(site.state_dir).check(n.name for n in nodes)  # malformed records: exit 2, nothing touched
    if app.output == "json" and progress_mode == "auto":
        progress_mode = "json"
    result = run_up(
        site,
        nodes,
        progress_mode=progress_mode,
        bmc_concurrency=bmc_concurrency,
        per_rack=per_rack,
        bmc_processes=bmc_processes,
        options=options,
    )
    emit(result.as_dict(), _summary_text)
    return 0 if result.ok else 1


def _parse_pins(site: Any, pins: tuple[str, ...]) -> dict[str, str]:
    """``--pin NODE=SHA256`` -> {node: lowercase hex}; a bad one is a usage error (exit 2)."""
    from ..talosapi.tls import normalize_pin

    out: dict[str, str] = {}
    known = {n.name for n in site.nodes}
    for item in pins:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise click.BadParameter(
                f"{item!r}: expected NODE=SHA256 with NODE a node of the inventory", param_hint="--pin"
            )
        try:
            out[name] = normalize_pin(value)
        except ValueError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint="--pin") from None
    return out


def _summary_text(d: dict[str, Any]) -> str:
    lines = ["", f"{'node':<16} {'rack':<10} {'phase':<18} {'time':>7}  result"]
    for n in d["nodes"]:
        res = "ok" if n["ok"] else f"FAILED: {n['error']}"
        lines.append(f"{n['name']:<16} {n['rack']:<10} {n['phase']:<18} {n['seconds']:>6.0f}s  {res}")
    cluster = d["cluster"] + (f": {d['cluster_error']}" if d["cluster_error"] else "")
    lines.append(f"cluster: {cluster}")
    if d["kubeconfig"]:
        lines.append(f"kubeconfig: {d['kubeconfig']}")
    if d.get("platform") != "not installed" or d.get("stage_error"):
        why = f": {d['stage_error']}" if d.get("platform") == "failed" and d.get("stage_error") else ""
        lines.append(f"platform {d['bundle']} {d['platform']}{why}")
    lines.append(f"total: {d['seconds']:.0f}s")
    return "\n".join(lines)


@click.command()
@pass_app
def status(app: App) -> None:
    """Every node's state, last event and error."""
    site = app.site
    store = StateStore(site.state_dir)
    events = EventLog(store.events_path)
    rows = []
    for node in app.selected():
        phase: str | None = None
        try:
            rec = store.node(node.name)
        except MalformedState as exc:  # shown, not fatal: status is where the operator looks first
            phase = "unreadable"  # never shown as blank: the node may well be installed
            rec = NodeRecord(node.name, error=f"{exc.path}: {exc.problem}. {exc.recovery}")
        ev = events.latest(node.name)
        rows.append(
            {
                "name": node.name,
                "rack": node.rack,
                "role": node.role.value,
                "phase": phase or rec.phase.value,
                "installed": None if phase else rec.installed,
                "error": rec.error,
                "last_event": None
                if ev is None
                else {
                    "id": ev.id,
                    "kind": ev.kind,
                    "outcome": ev.outcome,
                    "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.time)),
                    "detail": ev.data.get("detail") or ev.data.get("path") or "",
                },
            }
        )
    from ..layout import StateLayout
    from ..workflow.clusterflow import ClusterState

    cluster = ClusterState.load(StateLayout(site.state_dir).cluster_record)  # malformed: exit 2
    data = {
        "cluster": site.cluster.name,
        "formed": cluster.formed,
        "etcd_members": cluster.members,
        "stages": _stages(site, events),
        "nodes": rows,
    }

    def text(d: dict[str, Any]) -> str:
        out = [f"cluster {d['cluster']}: {'formed' if d['formed'] else 'not formed'}"]
        out.append("stages: " + ", ".join(f"{s['name']} {s['status']}" for s in d["stages"]))
        for r in d["nodes"]:
            ev = r["last_event"]
            evs = f"#{ev['id']} {ev['time']} {ev['kind']} {ev['outcome']}" if ev else "-"
            err = f"  error: {r['error']}" if r["error"] else ""
            out.append(f"  {r['name']:<14} {r['rack']:<8} {r['role']:<12} {r['phase']:<17} {evs}{err}")
        return "\n".join(out)

    emit(data, text)


def _stages(site: Any, events: EventLog) -> list[dict[str, Any]]:
    """The bundle's pipeline stages, by the names ``up`` records: ``done`` when the state
    directory records the stage as complete, else the status of its last ``pipeline.stage``
    event (``running``, ``failed``...), else ``pending``."""
    from ..layout import StateLayout
    from ..pipeline.stages import stages_for
    from ..workflow.progress import PIPELINE_STAGE

    layout = StateLayout(site.state_dir)
    last: dict[str, tuple[str, str]] = {}
    for event in events.iter():
        if event.kind == PIPELINE_STAGE:
            last[event.data.get("stage", "")] = (event.data.get("status", ""), event.data.get("detail", ""))
    out = []
    for stage in stages_for(site.cluster.bundle_spec):
        status, detail = last.get(stage.name, ("pending", ""))
        if stage.done(layout):
            status = "done"
        out.append({"name": stage.name, "status": status, "detail": detail})
    return out


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def reset(app: App, yes: bool) -> None:
    """Wipe the selected nodes through the Talos API and mark them blank."""
    import asyncio

    from ..pipeline.context import RunContext
    from ..workflow.locks import hold_racks
    from ..workflow.progress import Progress
    from ..workflow.reset import reset_nodes
    from ..workflow.talos_ops import TalosOps

    site = app.site
    if not app.nodes:
        raise click.UsageError("reset needs --node NAME (repeatable); it wipes the node's install disk")
    nodes = app.selected()
    if not yes and not click.confirm(f"wipe {', '.join(n.name for n in nodes)}?", default=False):
        raise click.Abort()
    ctx = RunContext.for_site(site, Progress(None, "lines"))
    ctx.talos = TalosOps(ctx.layout.talosconfig)
    with hold_racks(ctx.layout, [n.rack for n in nodes]):
        # Control planes leave etcd first (graceful) unless every one of them is reset; the
        # cluster record is updated, so the next ``up`` re-forms (and re-bootstraps) as needed.
        result = asyncio.run(reset_nodes(ctx, nodes))
    for name in result.wiped:
        click.echo(f"{name}: wiped, marked blank", err=True)
    if result.rebootstrap:
        click.echo("no installed control plane is left: the next `up` bootstraps etcd again", err=True)
    for member, command in result.stale.items():
        click.echo(f"etcd still lists {member}, no installed control plane; remove it: {command}", err=True)
    if result.failed:
        raise OperationError("reset failed for " + "; ".join(f"{n}: {e}" for n, e in result.failed.items()))
