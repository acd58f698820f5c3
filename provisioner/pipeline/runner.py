"""Walk the stages in order: skip what does not apply, skip what the state directory records
as done, run the rest. A ``StageFailed`` stops the walk (later stages build on it) and is
reported with its message; anything else (bad input, a bug) propagates to the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Stage, StageFailed
from .context import RunContext


def _outdated(stage: Stage, ctx: RunContext) -> bool:
    """A stage recorded as done for other inventory inputs runs again (optional hook
    ``outdated(site, layout)``; the platform stages have it, the hardware stages re-check
    their own work)."""
    hook = getattr(stage, "outdated", None)
    return bool(hook(ctx.site, ctx.layout)) if hook is not None else False


async def walk(ctx: RunContext, stages: Sequence[Stage]) -> str | None:
    """Run ``stages`` for the site's bundle; the failure message of the stage that failed, or None."""
    bundle = ctx.site.cluster.bundle_spec
    progress = ctx.progress
    until = ctx.options.get("until")
    try:
        for stage in stages:
            if not stage.applies(bundle):
                continue
            if stage.done(ctx.layout) and not _outdated(stage, ctx):
                ctx.stages[stage.name] = "done"
                progress.stage(stage.name, "done", "already done (recorded in the state directory)")
                if stage.name == until:
                    break
                continue
            ctx.stages[stage.name] = "running"
            progress.stage(stage.name, "running")
            try:
                await stage.run(ctx)
            except StageFailed as exc:
                ctx.stages[stage.name] = "failed"
                progress.stage(stage.name, "failed", str(exc), level="error")
                return str(exc)
            if ctx.halt is not None:
                ctx.stages[stage.name] = "halted"
                progress.stage(stage.name, "halted", ctx.halt, level="warning")
                return None
            ctx.stages[stage.name] = "done"
            progress.stage(stage.name, "done")
            if stage.name == until:  # `up --until STAGE`: the operator stops the walk here
                break
    finally:
        ctx.resources.close()
    return None
