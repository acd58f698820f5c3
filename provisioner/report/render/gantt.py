"""The timeline: a Gantt chart per node of its stages, then the cluster steps and the
platform stages, with the median of each stage and the slowest nodes marked."""

from __future__ import annotations

import time
from html import escape

from ..collect import ReportData
from ..timeline import NODE_STAGES, SLOW_FACTOR, STAGE_LABELS, Span, Timeline
from .style import STAGE_COLOURS

LABEL_W = 190
CHART_W = 1000
_TICKS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
CLUSTER_COLOUR = "#7986cb"
PLATFORM_COLOUR = "#a1887f"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Canvas:
    def __init__(self, tl: Timeline, row_h: int) -> None:
        self.t0 = tl.start
        self.span = max(tl.end - tl.start, 1e-6)
        self.row_h = row_h
        self.y = 0
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        return LABEL_W + (t - self.t0) / self.span * CHART_W

    def label(self, text: str, cls: str = "lbl", title: str = "") -> None:
        tip = f"<title>{escape(title)}</title>" if title else ""
        self.parts.append(
            f'<text class="{cls}" x="4" y="{self.y + self.row_h - 3}">{escape(text)}{tip}</text>'
        )

    def bar(
        self, span: Span, who: str, fill: str | None = None, outlier: bool = False, kind: str = "node"
    ) -> None:
        x0 = self.x(span.start)
        w = max(self.x(span.end) - x0, 1.5)
        cls = (
            f"bar s-{span.stage}" + (" failed" if span.failed else "") + (" running" if span.running else "")
        )
        cls += " outlier" if outlier else ""
        style = f' style="fill:{fill}"' if fill and not span.failed else ""
        state = "failed" if span.failed else ("running" if span.running else "done")
        self.parts.append(
            f'<rect class="{cls}"{style} data-kind="{kind}" data-node="{escape(who)}"'
            f' data-stage="{escape(span.stage)}" data-start="{span.start - self.t0:.3f}"'
            f' x="{x0:.1f}" y="{self.y + 1}" width="{w:.1f}" height="{self.row_h - 2}">'
            f"<title>{escape(who)}: {escape(STAGE_LABELS.get(span.stage, span.stage))}"
            f" {duration(span.seconds)} ({state})</title></rect>"
        )


def _axis(c: _Canvas) -> None:
    step = next((s for s in _TICKS if c.span / s <= 10), _TICKS[-1])
    k = 0
    while k * step <= c.span + 1e-9:
        x = c.x(c.t0 + k * step)
        c.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="100%" stroke="#eceff1"/>')
        c.parts.append(f'<text x="{x + 2:.1f}" y="11" font-size="10">+{duration(k * step)}</text>')
        k += 1
    c.y += 16


def render(data: ReportData) -> str:
    tl = data.timeline
    if not tl.nodes and not tl.cluster and not tl.platform:
        return '<section id="timeline"><h2>Timeline</h2><p>No events yet: nothing has run.</p></section>'
    many = len(tl.nodes) > 300
    c = _Canvas(tl, 9 if many else 13)
    _axis(c)
    # The median of each stage, stacked from the start: what a typical node looks like.
    cursor = tl.start
    c.label("median node", "lbl", "median duration of each stage over the nodes that finished it")
    for stage in NODE_STAGES:
        if stage in tl.medians:
            span = Span(stage, cursor, cursor + tl.medians[stage])
            c.bar(span, "median", kind="median")
            cursor = span.end
    c.y += c.row_h + 2
    for title, spans, fill, kind in (("cluster", tl.cluster, CLUSTER_COLOUR, "cluster"),):
        if spans:
            c.label(title)
            for span in spans:
                c.bar(span, title, fill, kind=kind)
            c.y += c.row_h
    for span in tl.platform:
        c.label(f"stage: {span.stage}")
        c.bar(span, span.stage, PLATFORM_COLOUR, kind="platform")
        c.y += c.row_h
    c.y += 4
    slow = set(tl.slowest)
    for rack, infos in data.site.racks():
        rows = [tl.nodes[i.name] for i in infos if i.name in tl.nodes]
        if not rows:
            continue
        c.parts.append(
            f'<text x="4" y="{c.y + 11}" font-size="11" font-weight="700">rack {escape(rack)}</text>'
        )
        c.y += 14
        for node in rows:
            mark = " ⚠ slow" if node.node in slow else ""
            c.label(
                f"{node.node}{mark}",
                "lbl slow" if mark else "lbl",
                f"{node.node}: {duration(node.total)} in total",
            )
            c.parts.append(f'<g class="row" data-node="{escape(node.node)}">')
            for span in node.spans:
                c.bar(span, node.node, outlier=(node.node, span.stage) in tl.outliers)
            c.parts.append("</g>")
            c.y += c.row_h
    height = c.y + 6
    svg = (
        f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + CHART_W + 20}"'
        f' height="{height}" viewBox="0 0 {LABEL_W + CHART_W + 20} {height}">{"".join(c.parts)}</svg>'
    )
    return (
        '<section id="timeline"><h2>Timeline</h2>'
        f"<p>From {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(tl.start))} UTC, "
        f"{duration(tl.end - tl.start)} in all. A bar with a black outline took over twice its stage's "
        f"median; nodes marked ⚠ slow are the slowest, over {SLOW_FACTOR:g} times the median node's time.</p>"
        f"{_legend()}{_medians(tl)}{_slowest(tl)}<div style='overflow-x:auto'>{svg}</div></section>"
    )


def _legend() -> str:
    items = [
        f'<span><i style="background:{STAGE_COLOURS[s]}"></i>{STAGE_LABELS[s]}</span>' for s in NODE_STAGES
    ]
    items += [
        f'<span><i style="background:{CLUSTER_COLOUR}"></i>cluster step</span>',
        f'<span><i style="background:{PLATFORM_COLOUR}"></i>pipeline stage</span>',
        '<span><i style="background:#d32f2f"></i>failed</span>',
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def _medians(tl: Timeline) -> str:
    if not tl.medians:
        return ""
    heads = "".join(f"<th>{STAGE_LABELS[s]}</th>" for s in NODE_STAGES if s in tl.medians)
    cells = "".join(f"<td>{duration(tl.medians[s])}</td>" for s in NODE_STAGES if s in tl.medians)
    return (
        f'<table class="medians"><tr><th>median per stage</th>{heads}</tr><tr><td></td>{cells}</tr></table>'
    )


def _slowest(tl: Timeline) -> str:
    if not tl.slowest:
        return ""
    items = ", ".join(
        f'<a href="#node-{escape(n)}">{escape(n)}</a> ({duration(tl.nodes[n].total)})' for n in tl.slowest
    )
    return f"<p>Slowest nodes: {items}</p>"
