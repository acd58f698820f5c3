"""What a pipeline stage is.

``up`` walks the bundle's stages in order. Each stage says whether it applies to the
bundle, whether its work is already recorded as done in the state directory (so a rerun
skips it), and does its work given the run context. The same stage names appear in
``plan``, ``status``, the state records, the events and ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..bundles import Bundle
    from ..layout import StateLayout
    from .context import RunContext


class StageFailed(Exception):
    """A stage could not complete; the message names the objects at fault (exit 1)."""


@runtime_checkable
class Stage(Protocol):
    """One step of the pipeline. ``run`` must be safe to repeat after a crash at any point."""

    name: str

    def applies(self, bundle: Bundle) -> bool:
        """Whether this stage is part of the bundle's pipeline at all."""
        ...

    def done(self, layout: StateLayout) -> bool:
        """Whether the state directory records this stage as completed."""
        ...

    # Optional: ``outdated(site, layout) -> bool`` says a stage recorded as done was done for
    # other inventory inputs, so the runner runs it again (the platform stages have it).

    async def run(self, ctx: RunContext) -> None:
        """Do the stage's work; raise ``StageFailed`` with a located message on failure."""
        ...
