"""Platform commands: ``platform install|status``, ``platform assets fetch|import``, ``tenants apply``.

``install`` walks ``cozystack.stages.PLATFORM_STAGES`` in order, skipping stages the bundle does
not have and stages the state directory records as done (``--redo`` runs them again, which
writes nothing when the cluster already matches). Exit 1 with the named objects when a stage
fails, 2 for bad input (a foreign-CA kubeconfig, missing assets pin...).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click

from .context import App, pass_app
from .output import emit
from .params import SECONDS


def register(cli: click.Group) -> None:
    cli.add_command(platform)
    tenants_group = cli.commands.get("tenants")
    if isinstance(tenants_group, click.Group):
        tenants_group.add_command(tenants_apply)


@click.group()
def platform() -> None:
    """The Cozystack platform on the formed (or hosted) cluster."""


def run_stages(
    app: App, only: tuple[str, ...] = (), redo: bool = False, options: dict[str, Any] | None = None
) -> int:
    """Run the platform stages for the app's site; 0 done, 1 a stage failed."""
    from ..cozystack.progress import PlatformProgress
    from ..cozystack.stages import PLATFORM_STAGES, stale
    from ..events import EventLog
    from ..fsutil import private_dir
    from ..layout import StateLayout
    from ..pipeline.base import StageFailed
    from ..pipeline.context import RunContext
    from ..state import StateStore

    site = app.site
    bundle = site.cluster.bundle_spec
    known = [s.name for s in PLATFORM_STAGES]
    for name in only:
        if name not in known:
            raise click.BadParameter(
                f"{name}: no such platform stage ({', '.join(known)})", param_hint="--stage"
            )
    private_dir(site.state_dir)
    layout = StateLayout(site.state_dir)
    store = StateStore(site.state_dir)
    progress = PlatformProgress(app.output)
    ctx = RunContext(site, layout, store, EventLog(store.events_path), progress, dict(options or {}))
    started = time.monotonic()
    try:
        for stage in PLATFORM_STAGES:
            if only and stage.name not in only:
                continue
            if not stage.applies(bundle):
                continue
            if stage.done(layout) and not redo and not stale(stage, site, layout):
                progress.stage(stage.name, "skipped", "recorded as done")
                continue
            progress.stage(stage.name, "running", "starting")
            try:
                asyncio.run(stage.run(ctx))
            except StageFailed as exc:
                progress.stage(stage.name, "failed", str(exc), level="error")
                progress.close()
                click.echo(f"error: platform stage {stage.name} failed: {exc}", err=True)
                return 1
    finally:
        progress.close()
    acct = ctx.options.get("_accounting") or {"writes": [], "objects": 0, "apply_requests": 0, "by_verb": {}}
    summary = {
        "bundle": bundle.name,
        "ready": True,
        "writes": len(acct["writes"]),
        "written": acct["writes"],
        "objects": acct["objects"],
        "apply_requests": acct["apply_requests"],
        "requests": acct["by_verb"],
        "retries": acct.get("retries", 0),
        "seconds": round(time.monotonic() - started, 1),
    }
    emit(summary, lambda d: f"platform {d['bundle']} ready ({d['writes']} writes, {d['seconds']} s)")
    return 0


@platform.command("install")
@click.option("--stage", "only", multiple=True, metavar="NAME", help="Only this stage (repeatable).")
@click.option("--redo", is_flag=True, help="Run stages recorded as done again (writes only what differs).")
@click.option("--prune", is_flag=True, help="Delete Tenants that are not in the inventory.")
@click.option("--timeout", type=SECONDS, default=None, help="Override timeouts.platform (seconds).")
@pass_app
def install(app: App, only: tuple[str, ...], redo: bool, prune: bool, timeout: float | None) -> int:
    """Install the bundle, storage, virtualization, networking and tenants; rerun to resume."""
    return run_stages(app, only, redo, {"prune": prune, "timeout": timeout})


@platform.command("status")
@pass_app
def status(app: App) -> None:
    """Each platform stage: applies, done, and what its record says."""
    from ..cozystack.stages import PLATFORM_STAGES, read_record
    from ..layout import StateLayout

    site = app.site
    layout = StateLayout(site.state_dir)
    rows = []
    for stage in PLATFORM_STAGES:
        rec = read_record(layout, stage.name) or {}
        row: dict[str, Any] = {
            "stage": stage.name,
            "applies": stage.applies(site.cluster.bundle_spec),
            "done": stage.done(layout),
        }
        if stage.name == "helmreleases" and rec.get("releases"):
            rels = rec["releases"]
            row["ready"] = sum(1 for r in rels.values() if r.get("ready") is True)
            row["total"] = len(rels)
            row["failing"] = sorted(
                k for k, r in rels.items() if r.get("ready") is False and not r.get("blockedBy")
            )
        rows.append(row)

    def text(data: list[dict[str, Any]]) -> str:
        out = []
        for r in data:
            state = "n/a" if not r["applies"] else ("done" if r["done"] else "pending")
            extra = f"  {r['ready']}/{r['total']} ready" if "total" in r else ""
            if r.get("failing"):
                extra += f"; failing: {', '.join(r['failing'])}"
            out.append(f"{r['stage']:<17} {state}{extra}")
        return "\n".join(out)

    emit(rows, text)


@platform.group("assets")
def platform_assets() -> None:
    """Cozystack installer manifests: fetch, or import for air-gapped sites; pinned by sha256."""


def _print_results(results: list[Any]) -> None:
    emit(
        [{"name": r.name, "path": str(r.path), "sha256": r.sha256, "outcome": r.outcome} for r in results],
        lambda d: "\n".join(
            f"{x['name']}: {x['outcome']} sha256 {x['sha256'][:16]}… ({x['path']})" for x in d
        ),
    )


@platform_assets.command("fetch")
@click.option("--base-url", default=None, help="Release download URL (default: Cozystack's GitHub releases).")
@pass_app
def assets_fetch(app: App, base_url: str | None) -> None:
    """Download the release files of cluster.cozystack_version; verify or pin them."""
    from ..cozystack import assets

    _print_results(assets.fetch(app.site, base_url=base_url or assets.RELEASE_URL))


@platform_assets.command("import")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--update-lock", is_flag=True, help="Re-pin files whose sha256 changed.")
@pass_app
def assets_import(app: App, directory: Path, update_lock: bool) -> None:
    """Import the release files from DIRECTORY (air-gapped sites)."""
    from ..cozystack import assets

    _print_results(assets.import_dir(app.site, directory, update_lock=update_lock))


@platform_assets.command("lab-import")
@pass_app
def assets_lab_import(app: App) -> None:
    """Import the lab's stand-in manifests (documented shape, stand-in images) for this version."""
    import tempfile

    from ..cozystack import assets
    from ..lab import platform_assets as standin

    with tempfile.TemporaryDirectory() as tmp:
        standin.write(app.site.cluster.cozystack_version, Path(tmp))
        _print_results(assets.import_dir(app.site, Path(tmp)))


@click.command("apply")
@click.option("--prune", is_flag=True, help="Delete Tenants that are not in the inventory.")
@click.option("--timeout", type=SECONDS, default=None, help="Override timeouts.platform (seconds).")
@pass_app
def tenants_apply(app: App, prune: bool, timeout: float | None) -> int:
    """Create or update the tenant tree and verify its namespace labels."""
    return run_stages(app, ("tenants",), True, {"prune": prune, "timeout": timeout})
