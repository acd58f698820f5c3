"""The racks section: one column per rack, one cell per node in rack order."""

from __future__ import annotations

import time
from html import escape

from ..collect import STATES, NodeStatus, ReportData, rack_problem
from .style import STATE_COLOURS


def node_anchor(name: str) -> str:
    return f"node-{name}"


def _cell(n: NodeStatus) -> str:
    ev = n.last
    ev_text = (
        "no events yet"
        if ev is None
        else f"#{ev.id} {time.strftime('%H:%M:%S', time.gmtime(ev.time))} {ev.text}"
    )
    tip = f"{n.name} ({n.role}) phase {n.phase}; last event: {ev_text}"
    if n.error:
        tip += f"; error: {n.error}"
    cp = " (cp)" if n.role == "controlplane" else ""
    err = f'<span class="err">{escape(n.error)}</span>' if n.error else ""
    return (
        f'<div class="cell state-{n.state}" id="{escape(node_anchor(n.name))}" data-node="{escape(n.name)}" '
        f'data-state="{n.state}" title="{escape(tip)}"><b>{escape(n.name)}{cp} · {escape(n.phase)}</b>'
        f'<span class="ev">{escape(ev_text)}</span>{err}</div>'
    )


def _bar(nodes: list[NodeStatus]) -> str:
    """A stacked bar of the rack's states: a stuck rack shows at a glance."""
    total = len(nodes) or 1
    parts = []
    for state in STATES:
        k = sum(1 for n in nodes if n.state == state)
        if k:
            style = f"width:{100 * k / total:.2f}%;background:{STATE_COLOURS[state]}"
            parts.append(f'<i style="{style}" title="{state}: {k}"></i>')
    return f'<div class="bar">{"".join(parts)}</div>'


def render(data: ReportData) -> str:
    by_name = {n.name: n for n in data.nodes}
    cols = []
    for rack, infos in data.site.racks():
        nodes = [by_name[i.name] for i in infos]
        counts = ", ".join(
            f"{s} {sum(1 for n in nodes if n.state == s)}" for s in STATES if any(n.state == s for n in nodes)
        )
        problem = rack_problem(nodes, data.generated)
        stuck = " stuck" if problem else ""
        why = f'<div class="why">STUCK: {escape(problem)}</div>' if problem else ""
        cols.append(
            f'<div class="rack{stuck}" data-rack="{escape(rack)}"><h3>{escape(rack)} '
            f"<small>({len(nodes)} nodes)</small></h3>{why}"
            f'{_bar(nodes)}<div class="counts" style="font-size:11px">{escape(counts) or "no nodes"}</div>'
            + "".join(_cell(n) for n in nodes)
            + "</div>"
        )
    legend = "".join(f'<span><i style="background:{c}"></i>{s}</span>' for s, c in STATE_COLOURS.items())
    return (
        '<section id="racks"><h2>Racks</h2>'
        f'<div class="legend">{legend}</div><div class="racks">{"".join(cols)}</div></section>'
    )
