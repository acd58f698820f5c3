"""The platform section: the bundle's HelmRelease dependency graph, left (no dependencies)
to right (longest dependsOn chain), coloured by state; a failed release and every release
it holds up are outlined, with the edges between them."""

from __future__ import annotations

import time
from html import escape

from ..collect import ReportData
from ..platform import STATES, PlatformView
from .style import RELEASE_COLOURS

BOX_W = 178
BOX_H = 22
COL_GAP = 46
ROW_GAP = 6
MAX_ROWS = 16


def _layout(view: PlatformView) -> tuple[dict[str, tuple[int, int]], int, int]:
    depth = view.depth()
    columns: dict[int, list[str]] = {}
    for key in sorted(view.releases, key=lambda k: (view.releases[k].namespace, view.releases[k].name)):
        columns.setdefault(depth[key], []).append(key)
    # A crowded depth is split over several columns so the graph stays about as tall as wide.
    pos = {}
    x = 10
    tallest = 0
    for col in sorted(columns):
        keys = columns[col]
        for chunk in range(0, len(keys), MAX_ROWS):
            for row, key in enumerate(keys[chunk : chunk + MAX_ROWS]):
                pos[key] = (x, 10 + row * (BOX_H + ROW_GAP))
            tallest = max(tallest, min(MAX_ROWS, len(keys) - chunk))
            x += BOX_W + (COL_GAP if chunk + MAX_ROWS >= len(keys) else COL_GAP // 3)
    return pos, x + 10, 20 + tallest * (BOX_H + ROW_GAP)


def render(data: ReportData) -> str:
    view = data.platform
    head = '<section id="platform"><h2>Platform</h2>'
    if not view.releases:
        return head + f"<p>Bundle {escape(view.bundle)} lists no releases.</p></section>"
    pos, width, height = _layout(view)
    held = view.blocked()
    failed = {k for k, r in view.releases.items() if r.state == "failed"}
    hot = held | failed
    edges, boxes = [], []
    for key, rel in view.releases.items():
        x, y = pos[key]
        for dep in rel.depends:
            dx, dy = pos[dep]
            cls = ' class="held"' if key in held and dep in hot else ""
            x1, y1, x2, y2 = dx + BOX_W, dy + BOX_H / 2, x, y + BOX_H / 2
            mid = (x1 + x2) / 2
            curve = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
            edges.append(f'<path{cls} d="{curve}"/>')
        extra = " held" if key in held else ""
        label = rel.name if len(rel.name) <= 26 else rel.name[:25] + "…"
        if rel.holds:
            label = f"{label[:14]} holds {len(rel.holds)}"
        tip = f"{key}: {rel.state}"
        if rel.reason or rel.message:
            tip += f" ({rel.reason}) {rel.message}"
        if rel.blocked_by:
            tip += f"; blocked by {rel.blocked_by}"
        if rel.holds:
            tip += f"; holds up {len(rel.holds)} release(s)"
        boxes.append(
            f'<g class="rel r-{rel.state}{extra}" data-release="{escape(key)}" data-state="{rel.state}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="3"/>'
            f'<text x="{x + 5}" y="{y + 15}">{escape(label)}</text><title>{escape(tip)}</title></g>'
        )
    svg = (
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(edges)}{"".join(boxes)}</svg>'
    )
    return head + _summary(view, failed) + f"<div style='overflow-x:auto'>{svg}</div></section>"


def _summary(view: PlatformView, failed: set[str]) -> str:
    if not view.from_record:
        lines = [
            f"<p>Bundle <b>{escape(view.bundle)}</b>: {len(view.releases)} releases, not started "
            "(the platform stage has not recorded any state yet). Columns follow the dependsOn chains.</p>"
        ]
    else:
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(view.updated))
            if view.updated
            else "unknown time"
        )
        counts = ", ".join(
            f"{s} {n}" for s in STATES if (n := sum(1 for r in view.releases.values() if r.state == s))
        )
        lines = [f"<p>Bundle <b>{escape(view.bundle)}</b> as of {when}: {counts}.</p>"]
    for key in sorted(failed, key=lambda k: -len(view.releases[k].holds)):
        rel = view.releases[key]
        lines.append(
            f'<div class="alert">HelmRelease {escape(key)} failed'
            f" ({escape(rel.reason)}: {escape(rel.message)})"
            f" and holds up {len(rel.holds)} release(s)"
            + (
                f": {escape(', '.join(sorted(rel.holds)[:12]))}{' …' if len(rel.holds) > 12 else ''}"
                if rel.holds
                else ""
            )
            + "</div>"
        )
    legend = "".join(f'<span><i style="background:{c}"></i>{s}</span>' for s, c in RELEASE_COLOURS.items())
    return (
        "".join(lines)
        + f'<div class="legend">{legend}<span>dashed orange: held up by a failed release</span></div>'
    )
