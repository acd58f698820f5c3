"""Per-node stage timings, cluster steps and platform stages, read from the event log.

The event log is the only record of *when* things happened (node records keep only where a
node stands), so the Gantt chart is derived from it in one pass. Each node stage ends at
the event that proves it happened:

- ``power-off``: ``node.step`` phase ``powered-off``
- ``pxe``: the iPXE install script served to the node (``ipxe.script``, outcome ``install``);
  without the netboot service's events, the ``powered-on`` step once the node got its config
- ``config``: the node fetched its machine config (``config.fetch`` ok), or ``up`` saw it
  delivered (``node.step`` ``config-delivered``: the maintenance-API path)
- ``installed``: ``node.step`` phase ``installed``
- ``etcd``: control planes only, the first ``cluster.step`` ``etcd`` listing the node among
  the voting members

and starts where the previous one ended; the first starts when the run started (the first
event of the log) or when the node was last reset. Event kinds are the contract, not the
workflow's stage names, so the chart survives a restructured pipeline.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..events import CLUSTER_STEP, CONFIG_FETCH, IPXE_SCRIPT, NODE_STEP, Event

NODE_STAGES: tuple[str, ...] = ("power-off", "pxe", "config", "installed", "etcd")
STAGE_LABELS: dict[str, str] = {
    "power-off": "power-off",
    "pxe": "PXE boot",
    "config": "config fetched",
    "installed": "installed",
    "etcd": "joined etcd",
}
NODE_RESET = "node.reset"
OUTLIER_MIN_SECONDS = 5.0
SLOW_FACTOR = 1.5  # a node is marked slow only this far above the median node
# Statuses with which a pipeline stage ends (``progress.stage(name, status, ...)`` records a
# ``pipeline.stage`` event; any event carrying a ``stage`` is read the same way).
_STAGE_DONE = {"done", "ok", "completed", "complete", "skipped", "ready", "succeeded"}
_STAGE_FAILED = {"failed", "error"}
_VOTING = re.compile(r"voting members:\s*(.*)$")


@dataclass(frozen=True)
class Span:
    stage: str
    start: float
    end: float
    failed: bool = False
    running: bool = False  # not finished when the log ends

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass
class NodeTimeline:
    node: str
    spans: list[Span] = field(default_factory=list)
    failed_at: float | None = None

    @property
    def total(self) -> float:
        if not self.spans:
            return 0.0
        return self.spans[-1].end - self.spans[0].start


@dataclass
class Timeline:
    start: float
    end: float
    nodes: dict[str, NodeTimeline]
    cluster: list[Span]
    platform: list[Span]
    medians: dict[str, float]  # stage -> median seconds over the nodes that finished it
    slowest: list[str]  # nodes marked slow, slowest first
    outliers: set[tuple[str, str]]  # (node, stage) taking over twice the stage's median (and 5 s more)


@dataclass
class _NodeMarks:
    start: float
    marks: dict[str, float] = field(default_factory=dict)
    powered_on: float | None = None
    delivered: float | None = None
    failed_at: float | None = None


def build(
    events: Iterable[Event], nodes: Iterable[str], controlplanes: Iterable[str], now: float
) -> Timeline:
    """One pass over the log; ``now`` closes stages still running."""
    wanted = list(nodes)
    known = set(wanted)
    cps = set(controlplanes)
    t0: float | None = None
    last = 0.0
    marks: dict[str, _NodeMarks] = {}
    cluster_steps: list[tuple[str, float, str]] = []
    platform: dict[str, list[tuple[float, str, str]]] = {}
    for ev in events:
        if t0 is None:
            t0 = ev.time
        last = max(last, ev.time)
        kind, name = ev.kind, ev.node
        if name is not None and name in known:
            m = marks.get(name)
            if m is None:
                m = marks[name] = _NodeMarks(start=t0)
            if kind == NODE_STEP:
                _node_step(m, ev)
            elif kind == IPXE_SCRIPT and ev.outcome == "install":
                m.marks["pxe"] = ev.time
            elif kind == CONFIG_FETCH and ev.outcome == "ok":
                m.marks["config"] = ev.time
            elif kind == NODE_RESET:
                marks[name] = _NodeMarks(start=ev.time)
        elif kind == CLUSTER_STEP:
            step = str(ev.data.get("step", "?"))
            cluster_steps.append((step, ev.time, ev.outcome))
            if step == "etcd":
                found = _VOTING.search(str(ev.data.get("detail", "")))
                if found:
                    for member in (s.strip() for s in found.group(1).split(",")):
                        if member in cps and member in known:
                            mm = marks.setdefault(member, _NodeMarks(start=t0 or ev.time))
                            mm.marks.setdefault("etcd", ev.time)
        elif "stage" in ev.data and kind not in (NODE_STEP, CLUSTER_STEP):
            status = str(ev.data.get("status", ""))
            outcome = "error" if ev.outcome == "error" or status in _STAGE_FAILED else status
            platform.setdefault(str(ev.data["stage"]), []).append((ev.time, status, outcome))
    start = t0 if t0 is not None else now
    end = max(last, start)
    if now > end and any(m.failed_at is None and len(m.marks) < 4 for m in marks.values()):
        end = max(end, min(now, last + 3600.0))  # a run in progress: stages run until now
    timelines = {name: _spans(name, marks[name], name in cps, end) for name in wanted if name in marks}
    return _with_stats(
        Timeline(
            start,
            end,
            timelines,
            _cluster_spans(cluster_steps, end),
            _platform_spans(platform, end),
            {},
            [],
            set(),
        )
    )


def _node_step(m: _NodeMarks, ev: Event) -> None:
    phase = str(ev.data.get("phase", ""))
    if ev.outcome == "error":
        m.failed_at = ev.time
        return
    if ev.outcome == "ok" and phase in (
        "powered-off",
        "pxe-set",
        "powered-on",
        "config-delivered",
        "installed",
    ):
        m.failed_at = None  # a rerun moved the node on
    if ev.outcome != "ok":
        return
    if phase == "powered-off":
        m.marks["power-off"] = ev.time
    elif phase == "powered-on":
        m.powered_on = ev.time
    elif phase == "config-delivered":
        m.delivered = ev.time
    elif phase == "installed":
        m.marks["installed"] = ev.time


def _spans(name: str, m: _NodeMarks, controlplane: bool, end: float) -> NodeTimeline:
    ends = dict(m.marks)
    booted = "config" in ends or m.delivered is not None or "installed" in ends
    if "pxe" not in ends and m.powered_on is not None and booted:
        # No netboot events (a remote boot server's not pulled yet): the node booted, but
        # when is unknown, so the PXE stage ends at power-on. A node that never booted has
        # its PXE stage still running (or failed).
        ends["pxe"] = m.powered_on
    if "config" not in ends and m.delivered is not None:
        ends["config"] = m.delivered
    stages = NODE_STAGES if controlplane else NODE_STAGES[:-1]
    out = NodeTimeline(name, failed_at=m.failed_at)
    cursor = m.start
    for stage in stages:
        t = ends.get(stage)
        if t is None:
            # The stage in progress: it runs until the failure, or until the log ends.
            if m.failed_at is not None:
                out.spans.append(Span(stage, cursor, max(cursor, m.failed_at), failed=True))
            elif stage != "etcd" or "installed" in ends:
                out.spans.append(Span(stage, cursor, max(cursor, end), running=True))
            break
        t = max(t, cursor)  # a mark older than the previous one (a reset, a rerun) never runs backwards
        out.spans.append(Span(stage, cursor, t))
        cursor = t
    return out


def _cluster_spans(steps: list[tuple[str, float, str]], end: float) -> list[Span]:
    groups: list[tuple[str, float, bool]] = []
    for step, t, outcome in steps:
        if groups and groups[-1][0] == step:
            if outcome == "error":
                groups[-1] = (step, groups[-1][1], True)
            continue
        groups.append((step, t, outcome == "error"))
    spans = []
    for i, (step, t, failed) in enumerate(groups):
        if i + 1 < len(groups):
            spans.append(Span(step, t, groups[i + 1][1], failed=failed))
        elif step in ("formed", "waiting") or failed:
            spans.append(Span(step, t, t, failed=failed))
        else:
            spans.append(Span(step, t, max(t, end), running=True))
    return spans


def _platform_spans(stages: dict[str, list[tuple[float, str, str]]], end: float) -> list[Span]:
    spans = []
    for stage, seen in stages.items():
        first = seen[0][0]
        finish = next(((t, o) for t, s, o in seen if s in _STAGE_DONE or o == "error"), None)
        if finish is None:
            spans.append(Span(stage, first, max(first, end), running=True))
        else:
            spans.append(Span(stage, first, finish[0], failed=finish[1] == "error"))
    return sorted(spans, key=lambda s: s.start)


def _with_stats(tl: Timeline) -> Timeline:
    per_stage: dict[str, list[float]] = {}
    for node in tl.nodes.values():
        for span in node.spans:
            if not span.running and not span.failed:
                per_stage.setdefault(span.stage, []).append(span.seconds)
    tl.medians = {s: statistics.median(v) for s, v in per_stage.items() if v}
    for node in tl.nodes.values():
        for span in node.spans:
            median = tl.medians.get(span.stage)
            # Over twice the median, and by enough to matter: a 3 s power-off is not news.
            if (
                median is not None
                and span.seconds > 2 * median
                and span.seconds - median >= OUTLIER_MIN_SECONDS
            ):
                tl.outliers.add((node.node, span.stage))
    # Failed nodes are shown as failed, not as slow: their time is spent on retries.
    finished = [n for n in tl.nodes.values() if n.spans and not n.spans[-1].running and n.failed_at is None]
    if len(finished) >= 3:
        totals = sorted(finished, key=lambda n: n.total, reverse=True)
        median_total = statistics.median(n.total for n in finished)
        keep = max(1, min(20, len(finished) // 20))
        tl.slowest = [n.node for n in totals[:keep] if n.total > SLOW_FACTOR * median_total]
    return tl
