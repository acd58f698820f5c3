"""Site-level commands: validate, plan, bundles, tenants."""

from __future__ import annotations

from typing import Any

import click

from ..bundles import BUNDLES
from ..inventory import InventoryError
from ..pipeline.stages import stage_names
from ..plan import build_plan
from ..tenants import TenantNode, tree_for
from .context import App, pass_app
from .output import emit


def register(cli: click.Group) -> None:
    cli.add_command(validate)
    cli.add_command(plan)
    cli.add_command(bundles)
    cli.add_command(tenants)


@click.command()
@pass_app
def validate(app: App) -> None:
    """Check the inventory; exit 2 with every problem if it is invalid.

    Problems go to stderr as ``file:line: field.path: message``; with ``--output json``
    they are also printed on stdout as data, so tools need not parse the text.
    """
    try:
        inv = app.inventory
    except InventoryError as exc:
        if app.output == "json":
            emit({"valid": False, "problems": [p.as_dict() for p in exc.problems]})
        raise
    site = inv.site
    data = {
        "valid": True,
        "inventory": str(app.inventory_path),
        "state_dir": str(site.state_dir),
        "cluster": site.cluster.name,
        "bundle": site.cluster.bundle.value,
        "nodes": len(site.nodes),
        "racks": len({r.name for r in site.racks} | {n.rack for n in site.nodes}),
        "tenants": sum(1 for _ in tree_for(site).walk()) if site.tenants is not None else 0,
        "warnings": [w.as_dict() for w in inv.warnings],
    }

    def text(d: dict[str, Any]) -> str:
        warned = f", {len(d['warnings'])} warnings" if d["warnings"] else ""
        counts = f"{d['nodes']} nodes in {d['racks']} racks"
        return f"{d['inventory']}: valid ({counts}, bundle {d['bundle']}{warned})"

    emit(data, text)


@click.command()
@pass_app
def plan(app: App) -> None:
    """Show, per rack and node, the stages the bundle implies and the resolved values."""
    site = app.site
    data = build_plan(site, app.selected())
    emit(data, _plan_text)


def _plan_text(d: dict[str, Any]) -> str:
    lines = [
        f"cluster {d['cluster']}: bundle {d['bundle']}, Talos {d['talos_version']}, "
        f"Kubernetes {d['kubernetes_version']}, Cozystack {d['cozystack_version']}",
        f"API endpoint: {d['api_endpoint'] or '-'}   root host: {d['root_host'] or '-'}   "
        f"config delivery: {d['config_delivery']}",
        f"site stages: {' -> '.join(d['stages'])}",
        f"state directory: {d['state_dir']}",
    ]
    for rack in d["racks"]:
        lines.append(f"rack {rack['name']} ({len(rack['nodes'])} nodes):")
        for n in rack["nodes"]:
            bmc = f"{n['bmc']['protocol']:<7} {n['bmc']['endpoint']}" if n["bmc"] else "no BMC"
            lines.append(
                f"  {n['name']:<14} {n['role']:<12} {n['ip']:<15} {n['boot_mode']:<4} {n['boot_mac']}  "
                f"disk {n['install_disk']:<12} data {','.join(n['data_disks']) or '-':<18} {bmc}"
            )
            lines.append(f"      stages: {' -> '.join(n['stages'])}")
    if not d["racks"]:
        lines.append("no nodes to provision (hosted bundle or empty selection)")
    return "\n".join(lines)


@click.command()
def bundles() -> None:
    """List the Cozystack bundles and what each installs and excludes."""
    # The stages come from the pipeline itself (provisioner/pipeline/stages.py): one set of names.
    data = [{**b.as_dict(), "stages": stage_names(b)} for b in BUNDLES.values()]

    def text(rows: list[dict[str, Any]]) -> str:
        out = []
        for b in rows:
            out.append(f"{b['name']}: {b['summary']}")
            out.append(f"  installs: {', '.join(b['installs'])}")
            out.append(f"  optional: {', '.join(b['optional']) or '-'}")
            out.append(f"  excludes: {', '.join(b['excludes']) or '-'}")
            root_host = "yes" if b["requires_root_host"] else "no"
            out.append(f"  monitoring: {b['monitoring']}; root host required: {root_host}")
        return "\n".join(out)

    emit(data, text)


@click.group()
def tenants() -> None:
    """The tenant tree."""


@tenants.command("show")
@pass_app
def tenants_show(app: App) -> None:
    """Print the tenant tree: namespace, host and the tenant serving each service."""
    root = tree_for(app.site)
    emit(root.as_dict(), lambda _: "\n".join(_tree_lines(root, "", True, True)))


def _tree_lines(node: TenantNode, prefix: str, last: bool, top: bool) -> list[str]:
    services = ", ".join(f"{svc}={ns}" for svc, ns in node.services.items()) or "none"
    label = f"{node.name}  ns={node.namespace}  host={node.host or '-'}  services: {services}"
    lines = [label if top else f"{prefix}{'└── ' if last else '├── '}{label}"]
    child_prefix = "" if top else prefix + ("    " if last else "│   ")
    for i, child in enumerate(node.children):
        lines += _tree_lines(child, child_prefix, i == len(node.children) - 1, False)
    return lines
