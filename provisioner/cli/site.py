"""Site-level commands: validate, plan, bundles, tenants."""

from __future__ import annotations

from typing import Any

import click

from ..bundles import BUNDLES
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
    """Check the inventory; exit 2 with every problem if it is invalid."""
    inv = app.inventory
    site = inv.site
    data = {
        "valid": True,
        "cluster": site.cluster.name,
        "bundle": site.cluster.bundle.value,
        "nodes": len(site.nodes),
        "racks": len({n.rack for n in site.nodes}),
        "warnings": [w.as_dict() for w in inv.warnings],
    }
    emit(data, lambda d: f"{app.inventory_path}: valid ({d['nodes']} nodes in {d['racks']} racks, bundle {d['bundle']})")


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
        f"API endpoint: {d['api_endpoint'] or '-'}",
        f"stages: {' -> '.join(d['stages'])}",
    ]
    for rack in d["racks"]:
        lines.append(f"rack {rack['name']}:")
        for n in rack["nodes"]:
            bmc = f"{n['bmc']['protocol']} {n['bmc']['endpoint']}" if n["bmc"] else "no BMC"
            lines.append(
                f"  {n['name']:<16} {n['role']:<12} {n['ip']:<16} {n['boot_mode']:<5} {n['boot_mac']}  "
                f"disk {n['install_disk']}  data {','.join(n['data_disks']) or '-'}  {bmc}"
            )
        if rack["nodes"]:
            lines.append(f"    node stages: {' -> '.join(rack['nodes'][0]['stages'])}")
    return "\n".join(lines)


@click.command()
def bundles() -> None:
    """List the Cozystack bundles and what each installs and excludes."""
    data = [b.as_dict() for b in BUNDLES.values()]

    def text(rows: list[dict[str, Any]]) -> str:
        out = []
        for b in rows:
            out.append(f"{b['name']}: {b['summary']}")
            out.append(f"  installs: {', '.join(b['installs'])}")
            out.append(f"  excludes: {', '.join(b['excludes']) or '-'}")
            out.append(f"  monitoring: {b['monitoring']}; root host required: {'yes' if b['requires_root_host'] else 'no'}")
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
