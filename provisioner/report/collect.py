"""Everything the page shows, read once from the state directory.

Reads only what the report draws: node records, the event log, the cluster record and the
platform's helmreleases record, all located through ``StateLayout``. Secrets, machine
configs, the talosconfig and the kubeconfig are never opened, so the page cannot leak them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..events import NODE_STEP, Event, EventLog
from ..layout import StateLayout
from ..state import NodeRecord, Phase
from . import platform, timeline
from .view import SiteView

STATES = ("blank", "booting", "installing", "ready", "failed")
STALL_SECONDS = 600.0  # no event from a rack's nodes under way for this long: the rack is stuck
_STATE_OF_PHASE = {
    Phase.BLANK: "blank",
    Phase.POWERED_OFF: "booting",
    Phase.PXE_SET: "booting",
    Phase.POWERED_ON: "booting",
    Phase.CONFIG_DELIVERED: "installing",
    Phase.INSTALLED: "installing",  # only the persistent boot-from-disk step is left
    Phase.READY: "ready",
}
# Event fields that say what happened, in the order they are shown. Anything else an event
# carries (addresses, sizes, identities) stays out of the page.
_TEXT_FIELDS = ("phase", "step", "stage", "status", "detail", "reason", "message", "file")
# Defence in depth: error texts are written secret-free, but a page that gets mailed around
# must not depend on every writer getting that right. ``password=...``-like pairs and PEM
# blocks are cut out of anything shown.
_SECRET_PAIR = re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)(\S+)")
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.S)


def scrub(text: str) -> str:
    """``text`` with credential-looking values and PEM blocks replaced by ``<redacted>``."""
    return _PEM.sub("<redacted>", _SECRET_PAIR.sub(r"\1\2<redacted>", text))


@dataclass(frozen=True)
class LastEvent:
    id: int
    time: float
    kind: str
    outcome: str
    text: str


@dataclass
class NodeStatus:
    name: str
    rack: str
    role: str
    phase: str
    state: str  # one of STATES
    error: str | None
    attempts: int
    last: LastEvent | None


@dataclass
class ReportData:
    site: SiteView
    generated: float
    nodes: list[NodeStatus]
    timeline: timeline.Timeline
    platform: platform.PlatformView
    cluster: dict[str, object]
    last_event_id: int
    event_count: int
    notes: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for n in self.nodes if n.state == state)


def rack_problem(nodes: list[NodeStatus], now: float, stall: float = STALL_SECONDS) -> str | None:
    """Why a rack needs a look, or None: failed nodes, or nodes under way that have not
    produced an event for ``stall`` seconds (a run that hangs, or died and left them)."""
    failed = sum(1 for n in nodes if n.state == "failed")
    if failed:
        return f"{failed} failed"
    moving = [n for n in nodes if n.state in ("booting", "installing")]
    if not moving:
        return None
    newest = max((n.last.time for n in nodes if n.last is not None), default=None)
    if newest is None or now - newest < stall:
        return None
    return f"no progress for {int((now - newest) // 60)} min ({len(moving)} under way)"


def describe(ev: Event) -> str:
    """One line for an event: kind, outcome and its human-readable fields only."""
    parts = [str(ev.data[f]) for f in _TEXT_FIELDS if ev.data.get(f) not in (None, "")]
    failed = ev.outcome not in ("ok", "")
    if ev.kind == NODE_STEP and parts:  # a node's step speaks for itself: "ready · boots from disk"
        head = ev.outcome if failed else ""
    else:
        head = f"{ev.kind} [{ev.outcome}]" if failed else ev.kind
    body = " · ".join(parts)
    text = scrub(f"{head}: {body}" if head and body else head or body)
    return text if len(text) <= 300 else text[:297] + "..."


def read_record(layout: StateLayout, name: str) -> tuple[NodeRecord, str | None]:
    """The node's record, and what is wrong with it when it cannot be read.

    A malformed record does not stop the report (it exists to show what is wrong): the node
    is drawn as failed and the page says which file to fix before ``up`` runs again."""
    path = layout.node_record(name)
    try:
        return NodeRecord.from_json(path.read_text()), None
    except FileNotFoundError:
        return NodeRecord(name), None
    except Exception as exc:  # malformed JSON, a wrong type, an unknown phase, unreadable
        problem = f"{path}: node record is malformed ({type(exc).__name__}: {exc}); fix or remove it"
        return NodeRecord(name, error=f"state record {path.name} is malformed"), problem


def collect(view: SiteView, layout: StateLayout, now: float | None = None) -> ReportData:
    """Read the state directory into a ReportData; raises InputError for a malformed
    platform record (naming file and field)."""
    now = time.time() if now is None else now
    events = list(EventLog(layout.events).iter())
    last_by_node: dict[str, Event] = {}
    for ev in events:
        if ev.node is not None:
            last_by_node[ev.node] = ev
    nodes = []
    notes = []
    for info in view.nodes:
        rec, problem = read_record(layout, info.name)
        if problem:
            notes.append(problem)
        seen = last_by_node.get(info.name)
        state = "failed" if rec.error else _STATE_OF_PHASE.get(rec.phase, "blank")
        last = (
            None if seen is None else LastEvent(seen.id, seen.time, seen.kind, seen.outcome, describe(seen))
        )
        nodes.append(
            NodeStatus(
                info.name,
                info.rack,
                info.role,
                rec.phase.value,
                state,
                None if rec.error is None else scrub(rec.error),
                rec.attempts,
                last,
            )
        )
    tl = timeline.build(events, (n.name for n in view.nodes), view.controlplanes, now)
    plat = platform.load(
        layout.platform_stage(platform.HELMRELEASES_STAGE),
        view.bundle,
        view.bundle_enable,
        view.bundle_disable,
    )
    return ReportData(
        site=view,
        generated=now,
        nodes=nodes,
        timeline=tl,
        platform=plat,
        cluster=_cluster_record(layout.cluster_record),
        last_event_id=events[-1].id if events else 0,
        event_count=len(events),
        notes=notes,
    )


def _cluster_record(path: Path) -> dict[str, object]:
    """Whether the cluster formed and its etcd members; an unreadable record reads as "not formed"."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: raw.get(k) for k in ("formed", "bootstrapped", "bootstrap_node", "members")}


def fingerprint(layout: StateLayout) -> str:
    """Changes whenever anything the page shows may have changed: the serve mode's cue to
    rebuild the page and the browser's cue to reload it."""
    parts = []
    for path in (
        layout.events,
        layout.cluster_record,
        layout.platform_stage(platform.HELMRELEASES_STAGE),
        layout.nodes_dir,
        layout.platform_dir,
    ):
        try:
            st = path.stat()
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    return "/".join(parts)
