"""Secrets and machine configs: ``provisioner secrets generate`` and ``provisioner configs``.

Summaries carry paths, node names and CA fingerprints only: never a key, token or any
other secret, in text or ``--output json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..talos.configs import write_configs
from ..talos.diff import diff_configs
from ..talos.secrets import ensure_secrets, import_secrets, secrets_path
from .context import App, pass_app
from .output import emit


def register(cli: click.Group) -> None:
    cli.add_command(secrets)
    cli.add_command(configs)


@click.group()
def secrets() -> None:
    """The cluster secrets bundle (talosctl gen secrets format)."""


@secrets.command("generate")
@click.option(
    "--from", "source", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Import this talosctl secrets.yaml instead of generating one.",
)
@click.option(
    "--ignore-installed-nodes", is_flag=True,
    help="Generate new secrets although inventory nodes answer as installed under other secrets "
    "(they can then only be reinstalled); logged as a warning.",
)
@pass_app
def secrets_generate(app: App, source: Path | None, ignore_installed_nodes: bool) -> None:
    """Create the bundle once (state/<cluster>/secrets.yaml, 0600); later runs reuse it."""
    site = app.site
    path = secrets_path(site)
    if source is not None:
        bundle, created = import_secrets(site, source)
    else:
        existed = path.exists()
        bundle = ensure_secrets(site, ignore_installed_nodes=ignore_installed_nodes)
        created = not existed
    data = {
        "path": str(path),
        "created": created,
        "imported_from": str(source) if source is not None else None,
        "ca_fingerprints": bundle.ca_fingerprints(),
    }

    def text(d: dict[str, Any]) -> str:
        verb = ("imported" if source else "generated") if d["created"] else "kept existing"
        return f"{verb} secrets bundle {d['path']}"

    emit(data, text)


@click.group()
def configs() -> None:
    """Talos machine configs, one per node, plus the admin talosconfig."""


_select_options = [
    click.option("--rack", "racks", multiple=True, metavar="NAME", help="Only nodes in this rack."),
    click.option("--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable)."),
]


def _with_selection(f: Any) -> Any:
    for option in reversed(_select_options):
        f = option(f)
    return f


@configs.command("generate")
@_with_selection
@pass_app
def configs_generate(app: App, racks: tuple[str, ...], nodes: tuple[str, ...]) -> None:
    """Render, check and write state/<cluster>/configs/<node>.yaml and talosconfig."""
    site = app.site
    selected = app.selected(racks, nodes)
    result = write_configs(site, selected)
    data = {
        "cluster": site.cluster.name,
        "talos_version": site.cluster.talos.version,
        "machine_configs": {name: str(p) for name, p in result.configs.items()},
        "changed": result.changed,
        "talosconfig_file": str(result.talosconfig),
        "talosconfig_changed": result.talosconfig_changed,
    }

    def text(d: dict[str, Any]) -> str:
        lines = [f"{len(d['machine_configs'])} machine configs for Talos {d['talos_version']} "
                 f"({len(d['changed'])} changed), talosconfig {d['talosconfig_file']}"]
        lines += [f"  {name:<20} {path}{'  (changed)' if name in d['changed'] else ''}"
                  for name, path in d["machine_configs"].items()]
        return "\n".join(lines)

    emit(data, text)


@configs.command("diff")
@_with_selection
@pass_app
def configs_diff(app: App, racks: tuple[str, ...], nodes: tuple[str, ...]) -> None:
    """Show what `configs generate` would change in the files on disk (secrets redacted)."""
    site = app.site
    diffs = diff_configs(site, app.selected(racks, nodes))
    data = [{"node": d.node, "path": str(d.path), "status": d.status, "diff": d.diff} for d in diffs]

    def text(rows: list[dict[str, Any]]) -> str:
        out = []
        for r in rows:
            if r["status"] == "changed":
                out.append(r["diff"].rstrip("\n"))
            else:
                out.append(f"{r['node']}: {r['status']}")
        return "\n".join(out) if out else "no nodes selected"

    emit(data, text)
