"""The run context: everything a stage needs, loaded once per run.

Fields may be added (the pipeline-structure work extends this); none is removed or
renamed without updating every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..events import EventLog
    from ..inventory.model import Site
    from ..layout import StateLayout
    from ..state import StateStore


@dataclass
class RunContext:
    site: Site
    layout: StateLayout
    store: StateStore
    events: EventLog
    # The run's progress reporter: ``progress.stage(name, status, message, level="info")``
    # shows one line per change (a live line on a terminal, JSON with -o json).
    progress: Any
    # Options of this run (e.g. ``prune`` for tenants); stages read what they know.
    options: dict[str, Any] = field(default_factory=dict)
