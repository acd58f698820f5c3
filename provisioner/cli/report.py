"""The ``report`` command: the site as one HTML page, written to a file or served live."""

from __future__ import annotations

from pathlib import Path

import click

from .context import App, pass_app
from .output import emit, warn


def register(cli: click.Group) -> None:
    cli.add_command(report)


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the page (default: report.html in the state directory).",
)
@click.option("--serve", is_flag=True, help="Serve the page on localhost, refreshing as events arrive.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port for --serve."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address for --serve; anything but loopback shows the site to the network.",
)
@pass_app
def report(app: App, out: Path | None, serve: bool, port: int, host: str) -> None:
    """Racks, node timelines, platform progress and the tenant tree as one HTML page."""
    from ..layout import StateLayout
    from ..report import view_of, write_report

    site = app.site
    layout = StateLayout(site.state_dir)
    view = view_of(site, app.selected() if app.racks or app.nodes else None)
    if not serve:
        notes: list[str] = []
        path = write_report(view, layout, out, notes)
        for note in notes:
            warn(note)
        emit({"report": str(path)}, lambda d: f"report written to {d['report']} (open it in a browser)")
        return
    if out is not None:
        raise click.UsageError("--out and --serve do not go together: --serve writes no file")
    from ..report.serve import ReportServer

    server = ReportServer(view, layout, host, port)
    click.echo(f"serving the report of {site.cluster.name} on {server.url} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.close()
