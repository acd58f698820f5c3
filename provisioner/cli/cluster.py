"""Cluster formation commands: up, status, reset."""

from __future__ import annotations

import time
from typing import Any

import click

from ..errors import OperationError
from ..events import EventLog
from ..state import Phase, StateStore
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
    "--progress",
    "progress_mode",
    type=click.Choice(["auto", "live", "lines", "json"]),
    default="auto",
    help="Progress display (json with --output json).",
)
@pass_app
def up(app: App, bmc_concurrency: int, per_rack: int, progress_mode: str) -> int:
    """Provision the selected nodes and form the cluster; rerun to resume."""
    from ..workflow.run import up as run_up

    site = app.site
    nodes = app.selected()
    # Said first, on stderr: a run from an unexpected directory shows which state it uses.
    click.echo(f"state directory: {site.state_dir}", err=True)
    if app.output == "json" and progress_mode == "auto":
        progress_mode = "json"
    result = run_up(
        site, nodes, progress_mode=progress_mode, bmc_concurrency=bmc_concurrency, per_rack=per_rack
    )
    emit(result.as_dict(), _summary_text)
    return 0 if result.ok else 1


def _summary_text(d: dict[str, Any]) -> str:
    lines = ["", f"{'node':<16} {'rack':<10} {'phase':<18} {'time':>7}  result"]
    for n in d["nodes"]:
        res = "ok" if n["ok"] else f"FAILED: {n['error']}"
        lines.append(f"{n['name']:<16} {n['rack']:<10} {n['phase']:<18} {n['seconds']:>6.0f}s  {res}")
    cluster = d["cluster"] + (f": {d['cluster_error']}" if d["cluster_error"] else "")
    lines.append(f"cluster: {cluster}")
    if d["kubeconfig"]:
        lines.append(f"kubeconfig: {d['kubeconfig']}")
    lines.append(f"total: {d['seconds']:.0f}s")
    return "\n".join(lines)


@click.command()
@pass_app
def status(app: App) -> None:
    """Every node's state, last event and error."""
    site = app.site
    store = StateStore(site.state_dir)
    events = EventLog(store.events_path)
    last: dict[str, Any] = {}
    for event in events.iter():
        if event.node:
            last[event.node] = event
    rows = []
    for node in app.selected():
        rec = store.node(node.name)
        ev = last.get(node.name)
        rows.append(
            {
                "name": node.name,
                "rack": node.rack,
                "role": node.role.value,
                "phase": rec.phase.value,
                "installed": rec.installed,
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
    from ..workflow.clusterflow import ClusterState, cluster_state_path

    cluster = ClusterState.load(cluster_state_path(store))
    data = {
        "cluster": site.cluster.name,
        "formed": cluster.formed,
        "etcd_members": cluster.members,
        "nodes": rows,
    }

    def text(d: dict[str, Any]) -> str:
        out = [f"cluster {d['cluster']}: {'formed' if d['formed'] else 'not formed'}"]
        for r in d["nodes"]:
            ev = r["last_event"]
            evs = f"#{ev['id']} {ev['time']} {ev['kind']} {ev['outcome']}" if ev else "-"
            err = f"  error: {r['error']}" if r["error"] else ""
            out.append(f"  {r['name']:<14} {r['rack']:<8} {r['role']:<12} {r['phase']:<17} {evs}{err}")
        return "\n".join(out)

    emit(data, text)


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def reset(app: App, yes: bool) -> None:
    """Wipe the selected nodes through the Talos API and mark them blank."""
    import asyncio

    from ..workflow import talos_ops
    from ..workflow.locks import hold_racks

    site = app.site
    if not app.nodes:
        raise click.UsageError("reset needs --node NAME (repeatable); it wipes the node's install disk")
    nodes = app.selected()
    if not yes and not click.confirm(f"wipe {', '.join(n.name for n in nodes)}?", default=False):
        raise click.Abort()
    store = StateStore(site.state_dir)
    talosconfig = site.state_dir / "talosconfig"
    failed = []
    with hold_racks(store.locks_dir, [n.rack for n in nodes]):
        for node in nodes:
            try:
                asyncio.run(talos_ops.reset(str(node.ip), talosconfig))
            except talos_ops.TalosUnavailable as exc:
                failed.append(f"{node.name}: {exc}")
                continue
            store.update(node.name, phase=Phase.BLANK, installed=False, attempts=0, error=None, extra={})
            EventLog(store.events_path).append("node.reset", node=node.name)
            click.echo(f"{node.name}: wiped, marked blank", err=True)
    if failed:
        raise OperationError("reset failed for " + "; ".join(failed))
