"""Network boot commands: ``netboot serve|render`` and ``assets fetch|import``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..events import EventLog
from ..inventory import load_inventory
from ..inventory.model import Node, Site
from ..layout import StateLayout
from ..state import StateStore
from .context import App, pass_app
from .output import emit, warn
from .params import PORT, SECONDS

_assets_dir_option = click.option(
    "--assets-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Asset cache root (default: $PROVISIONER_ASSETS_DIR or <state dir>/../assets).",
)


def register(cli: click.Group) -> None:
    cli.add_command(netboot)
    cli.add_command(assets)


def _need_netboot(site: Site) -> None:
    if site.networks is None or site.networks.netboot is None:
        raise InputError("networks.netboot: the inventory has no netboot section (networks.netboot.server)")


@click.group()
def netboot() -> None:
    """The network boot service: dnsmasq (DHCP/TFTP/RA) and the HTTP server."""


@netboot.command("serve")
@click.option(
    "--rack", "racks", multiple=True, metavar="NAME", help="Only install nodes of this rack (repeatable)."
)
@_assets_dir_option
@click.option(
    "--no-dhcp", is_flag=True, help="HTTP only; no dnsmasq (another DHCP/TFTP server chains to us)."
)
@pass_app
def serve(app: App, racks: tuple[str, ...], assets_dir: Path | None, no_dhcp: bool) -> None:
    """Serve in the foreground until Ctrl-C; reloads when the inventory changes (or on SIGHUP).

    Nodes outside the selection keep their DHCP reservation but are told to boot from disk.
    """
    from ..netboot.assets import asset_set, verify
    from ..netboot.service import NetbootService, run_foreground

    site = app.site
    _need_netboot(site)
    nodes = app.selected(racks)
    for problem in verify(site, assets_dir):
        warn(problem)
    store = StateStore(site.state_dir)
    service = NetbootService(
        site, store, EventLog(store.events_path), nodes, assets_root=assets_dir, dhcp=not no_dhcp
    )

    def load() -> tuple[Site, list[Node]]:
        fresh = load_inventory(app.inventory_path).site
        _need_netboot(fresh)
        return fresh, fresh.select(racks or app.racks, app.nodes)

    def ready(svc: NetbootService) -> None:
        host, port = svc.http_address
        dhcp = (
            f"dnsmasq config {svc.dnsmasq_paths.conf}, log {svc.dnsmasq_paths.log}" if svc.dhcp else "no DHCP"
        )
        click.echo(
            f"netboot: serving {len(nodes)} node(s) on http://{host}:{port}; {dhcp}; "
            f"assets {asset_set(site, assets_dir).directory}; Ctrl-C to stop",
            err=True,
        )

    if app.verbose == 0:
        logging.getLogger("provisioner.netboot").setLevel(logging.INFO)
    run_foreground(service, load, watch=app.inventory_path, on_ready=ready)
    click.echo("netboot: stopped", err=True)


@netboot.command("render")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory to write into (default: <state dir>/netboot).",
)
@click.option(
    "--interface", default=None, help="Interface for router advertisements (default: from the site)."
)
@pass_app
def render(app: App, out: Path | None, interface: str | None) -> None:
    """Write the dnsmasq config (checked with `dnsmasq --test`) and the lease hook; start nothing."""
    from ..netboot import dnsmasq

    site = app.site
    _need_netboot(site)
    assert site.networks is not None and site.networks.netboot is not None
    paths = dnsmasq.Paths(out or StateLayout(site.state_dir).netboot_dir)
    iface = (
        interface
        or site.networks.netboot.interface
        or dnsmasq.interface_holding(str(site.networks.netboot.server))
    )
    dnsmasq.write_files(site, paths, StateStore(site.state_dir).events_path, interface=iface)
    data = {
        "dnsmasq_conf": str(paths.conf),
        "lease_hook": str(paths.hook),
        "interface": iface,
        "nodes": len(site.nodes),
        "test": "ok",
    }
    emit(
        data,
        lambda d: (
            f"wrote {d['dnsmasq_conf']} ({d['nodes']} reservations, dnsmasq --test ok)"
            + ("" if d["interface"] else "; no interface known, router advertisements off")
        ),
    )


@click.group()
def assets() -> None:
    """Talos kernel and initramfs: download from the Image Factory or import, pinned by sha256."""


def _results_text(results: list[dict[str, str]]) -> str:
    return "\n".join(
        f"{r['name']}: {r['outcome']}{' (pinned now)' if r['pinned_now'] else ''}  "
        f"sha256 {r['sha256']}  {r['path']}"
        for r in results
    )


@assets.command("fetch")
@click.option(
    "--factory",
    default=None,
    metavar="URL",
    help="Image Factory base URL (default https://factory.talos.dev).",
)
@_assets_dir_option
@pass_app
def fetch(app: App, factory: str | None, assets_dir: Path | None) -> None:
    """Download kernel-amd64 and initramfs-amd64.xz for the inventory's Talos version and schematic."""
    from ..netboot import assets as mod

    site = app.site
    store = StateStore(site.state_dir)
    results = mod.fetch(site, assets_dir, factory or mod.FACTORY_URL, EventLog(store.events_path))
    emit([{**r.__dict__, "path": str(r.path)} for r in results], _results_text)


@assets.command("import")
@click.option("--kernel", type=click.Path(path_type=Path), required=True, help="Local kernel image.")
@click.option("--initramfs", type=click.Path(path_type=Path), required=True, help="Local initramfs.")
@click.option("--update-lock", is_flag=True, help="Re-pin files whose sha256 differs from the lock file.")
@_assets_dir_option
@pass_app
def import_(app: App, kernel: Path, initramfs: Path, update_lock: bool, assets_dir: Path | None) -> None:
    """Take local files (air-gapped sites, the lab) into the asset cache and pin them."""
    from ..netboot import assets as mod

    site = app.site
    store = StateStore(site.state_dir)
    results = mod.import_files(site, kernel, initramfs, assets_dir, update_lock, EventLog(store.events_path))
    emit([{**r.__dict__, "path": str(r.path)} for r in results], _results_text)


# --- racks on their own L2 segment: the service on the rack's boot server -------------------
def _remote_options(func):  # type: ignore[no-untyped-def]
    for option in reversed(
        [
            click.option(
                "--rack", "rack", metavar="NAME", help="The rack (its inventory has a boot_server)."
            ),
            click.option(
                "--remote-dir",
                default=None,
                metavar="PATH",
                help="Bundle directory on the boot server (default ~/.provisioner/<cluster>/<rack>).",
            ),
            click.option(
                "--accept-new-host-key",
                is_flag=True,
                help="First contact: accept an unknown host key and record it in known_hosts beside the "
                "inventory (a changed key is always refused).",
            ),
            click.option(
                "--connect-timeout", type=SECONDS, default=15.0, show_default=True, help="SSH timeout."
            ),
        ]
    ):
        func = option(func)
    return func


def _one_rack(app: App, rack: str | None) -> str:
    if rack:
        return rack
    if len(app.racks) == 1:
        return app.racks[0]
    raise InputError("--rack NAME is required (one rack with a boot_server)")


def _remote_text(d: dict[str, object]) -> str:
    lines = [f"rack {d['rack']}: {d['boot_server']} {d['remote_dir']}"]
    if "uploaded" in d:
        lines.append(f"  uploaded: {', '.join(d['uploaded']) or 'nothing'}")  # type: ignore[arg-type]
        lines.append(f"  unchanged: {', '.join(d['unchanged']) or 'nothing'}")  # type: ignore[arg-type]
        nodes = d["nodes"]
        assert isinstance(nodes, dict)
        installing = sum(v == "install" for v in nodes.values())
        dhcp = "off"
        if d["dhcp"]:
            dhcp = f"on ({d['interface']})" if d["interface"] else "on"
        lines.append(
            f"  serving {len(nodes)} node(s) ({installing} to install) on {d['http']}; DHCP {dhcp}; "
            f"agent pid {d['agent_pid']}"
        )
    else:
        lines.append(
            f"  agent: {d.get('state')}"
            + (f", pid {d['pid']}" if d.get("pid") and d.get("running") else "")
            + (f", http {d['http']}" if d.get("http") and d.get("running") else "")
            + (f", error: {d['error']}" if d.get("error") else "")
        )
    lines.append(f"  merged {d['events_merged']} remote event(s) into the local log")
    return "\n".join(lines)


@netboot.command("push")
@_remote_options
@click.option(
    "--server",
    default=None,
    metavar="ADDR",
    help="Address the rack's nodes reach the boot server on (default: boot_server.host).",
)
@click.option(
    "--http-port", type=PORT, default=None, help="HTTP port on the boot server (default netboot.http_port)."
)
@click.option(
    "--interface", default=None, help="dnsmasq interface there (default: the one holding --server)."
)
@click.option("--no-dhcp", is_flag=True, help="HTTP only on the boot server; no dnsmasq there.")
@_assets_dir_option
@pass_app
def push(
    app: App,
    rack: str | None,
    remote_dir: str | None,
    accept_new_host_key: bool,
    connect_timeout: float,
    server: str | None,
    http_port: int | None,
    interface: str | None,
    no_dhcp: bool,
    assets_dir: Path | None,
) -> None:
    """Run the netboot service for a rack on its own L2 segment on the rack's boot server.

    Uploads over SSH/SFTP the rack's dnsmasq config, the machine configs of its nodes, the
    Talos assets (skipped when unchanged) and a small agent, then (re)starts dnsmasq and the
    HTTP server there. Rerun after configs or node states change.
    """
    from ..netboot import remote

    site = app.site
    _need_netboot(site)
    name = _one_rack(app, rack)
    store = StateStore(site.state_dir)
    result = remote.push(
        site,
        name,
        app.selected((name,)),
        store,
        EventLog(store.events_path),
        server=server,
        http_port=http_port,
        interface=interface,
        dhcp=not no_dhcp,
        assets_root=assets_dir,
        remote_dir=remote_dir,
        accept_new=accept_new_host_key,
        timeout=connect_timeout,
    )
    for w in result["warnings"]:
        warn(w)
    emit(result, _remote_text)


def _remote_agent(app: App, command: str, **opts: Any) -> None:
    from ..netboot import remote

    site = app.site
    call = remote.remote_status if command == "status" else remote.remote_stop
    result = call(
        site,
        _one_rack(app, opts["rack"]),
        EventLog(StateStore(site.state_dir).events_path),
        remote_dir=opts["remote_dir"],
        accept_new=opts["accept_new_host_key"],
        timeout=opts["connect_timeout"],
    )
    emit(result, _remote_text)


@netboot.command("remote-status")
@_remote_options
@pass_app
def remote_status(app: App, **opts: Any) -> None:
    """Is the rack's boot-server agent running? Pulls its new events into the local log."""
    _remote_agent(app, "status", **opts)


@netboot.command("remote-stop")
@_remote_options
@pass_app
def remote_stop(app: App, **opts: Any) -> None:
    """Stop the rack's boot-server agent (and its dnsmasq); its last events are pulled first."""
    _remote_agent(app, "stop", **opts)
