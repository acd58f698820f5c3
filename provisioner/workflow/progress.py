"""Where each stage and node stands, shown as it changes.

A live table (rich) on a terminal, one line per event otherwise, JSON lines with
``--output json`` so CI can parse the run. Every update also lands in the event log.
Stages report through ``stage(name, status, message, level)``, nodes through ``step``, the
cluster formation through ``cluster``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..events import NODE_STEP, EventLog

# The event kind of a pipeline stage's change (see ``Progress.stage``).
PIPELINE_STAGE = "pipeline.stage"


@dataclass
class NodeView:
    name: str
    rack: str
    phase: str
    detail: str = ""
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)


class Progress:
    def __init__(self, events: EventLog | None, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.events = events
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "live" if self.stream.isatty() else "lines"
        self.mode = mode
        self.nodes: dict[str, NodeView] = {}
        self.cluster_status = "waiting for the control planes"
        self.stages: dict[str, str] = {}  # stage name -> last status, in the order first seen
        self.stage_line = ""
        self._live: Any = None

    def __enter__(self) -> Progress:
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._table(), console=Console(file=self.stream), refresh_per_second=4, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    def add(self, name: str, rack: str, phase: str) -> None:
        self.nodes[name] = NodeView(name, rack, phase)
        self._refresh()

    def step(self, node: str, phase: str, detail: str = "", outcome: str = "ok", **data: Any) -> None:
        view = self.nodes.get(node)
        if view is not None:
            view.phase, view.detail = phase, detail
            if outcome == "error":
                view.error = detail
        event_id = None
        if self.events is not None:
            event_id = self.events.append(
                NODE_STEP, node=node, outcome=outcome, phase=phase, detail=detail, **data
            ).id
        self._emit(
            {"event": event_id, "node": node, "phase": phase, "outcome": outcome, "detail": detail, **data}
        )

    def cluster(self, step: str, detail: str = "", outcome: str = "ok") -> None:
        from ..events import CLUSTER_STEP

        self.cluster_status = f"{step}: {detail}" if detail else step
        event_id = None
        if self.events is not None:
            event_id = self.events.append(CLUSTER_STEP, outcome=outcome, step=step, detail=detail).id
        self._emit({"event": event_id, "cluster": step, "outcome": outcome, "detail": detail})

    def stage(self, name: str, status: str, message: str = "", level: str = "info") -> None:
        """A pipeline stage changed: ``status`` is running, done, skipped, failed or a step of its
        own; ``level`` is info, warning or error. Recorded as a ``pipeline.stage`` event."""
        self.stages[name] = status
        self.stage_line = f"{name}: {status}" + (f" ({message})" if message else "")
        event_id = None
        if self.events is not None:
            outcome = {"error": "error", "warning": "warning"}.get(level, "ok")
            event_id = self.events.append(
                PIPELINE_STAGE, outcome=outcome, stage=name, status=status, detail=message, level=level
            ).id
        self._emit(
            {
                "event": event_id,
                "stage": name,
                "status": status,
                "level": level,
                "outcome": "ok" if level == "info" else level,
                "detail": message,
            }
        )

    def _emit(self, record: dict[str, Any]) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps(record, default=str) + "\n")
            self.stream.flush()
        elif self.mode == "lines":
            who: str = "stage" if "stage" in record else record.get("node") or "cluster"
            what = (
                f"{record['stage']} {record['status']}"
                if "stage" in record
                else record.get("phase") or record.get("cluster")
            )
            mark = "" if record["outcome"] == "ok" else f" [{record['outcome']}]"
            detail = f": {record['detail']}" if record.get("detail") else ""
            self.stream.write(f"{time.strftime('%H:%M:%S')} {who:<14} {what}{mark}{detail}\n")
            self.stream.flush()
        else:
            self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        caption = f"cluster: {self.cluster_status}"
        if self.stage_line:
            caption = f"stage {self.stage_line}\n{caption}"
        table = Table(title="provisioner up", caption=caption, expand=False)
        for col in ("node", "rack", "phase", "detail"):
            table.add_column(col)
        for v in self.nodes.values():
            style = "red" if v.error else ("green" if v.phase == "ready" else "")
            table.add_row(v.name, v.rack, v.phase, (v.error or v.detail)[:80], style=style)
        return table
