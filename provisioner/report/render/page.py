"""The whole page: header, failed-node alert, then racks, timeline, platform and tenants."""

from __future__ import annotations

import time
from html import escape

from ..collect import STATES, ReportData
from . import gantt, graph, racks, tenantview
from .style import CSS

# Served pages only (``report --serve``): poll the same origin for a new version of the
# state and reload. The file written to disk carries no script at all.
LIVE_SCRIPT = """
<script>
(function(){
  var seen = document.documentElement.getAttribute("data-version");
  function poll(){
    fetch("/version", {cache: "no-store"}).then(function(r){ return r.ok ? r.text() : seen; })
      .then(function(v){ if (v && v !== seen) { location.reload(); } })
      .catch(function(){}).then(function(){ setTimeout(poll, %d); });
  }
  setTimeout(poll, %d);
})();
</script>
"""


def render(data: ReportData, version: str = "", live_poll_ms: int | None = None) -> str:
    site = data.site
    counts = "".join(f"<span>{s}: {data.count(s)}</span>" for s in STATES)
    formed = data.cluster.get("formed")
    cluster_line = "cluster formed" if formed else "cluster not formed"
    if data.cluster.get("members"):
        cluster_line += f" (etcd: {', '.join(map(str, data.cluster['members']))})"  # type: ignore[call-overload]
    failed = [n for n in data.nodes if n.state == "failed"]
    alert = ""
    if failed:
        items = ", ".join(
            f'<a href="#{escape(racks.node_anchor(n.name))}">{escape(n.name)}</a>' for n in failed[:50]
        )
        more = f" and {len(failed) - 50} more" if len(failed) > 50 else ""
        alert = f'<div class="alert" id="failed-nodes">{len(failed)} node(s) FAILED: {items}{more}</div>'
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in data.notes)
    script = LIVE_SCRIPT % (live_poll_ms, live_poll_ms) if live_poll_ms else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data.generated))
    return (
        f'<!DOCTYPE html><html lang="en" data-version="{escape(version)}"><head><meta charset="utf-8">'
        f"<title>{escape(site.cluster)}: site report</title>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request: the page loads nothing
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>{escape(site.cluster)} · bundle {escape(site.bundle)}</h1>"
        f'<div class="meta">{len(data.nodes)} nodes in {len(site.rack_order)} rack(s) · {cluster_line} · '
        f"{data.event_count} events (last #{data.last_event_id}) · generated {generated}"
        f"{' · live' if live_poll_ms else ''}</div>"
        '<nav><a href="#racks">Racks</a><a href="#timeline">Timeline</a><a href="#platform">Platform</a>'
        '<a href="#tenants">Tenants</a></nav></header><main>'
        f'<div class="summary">{counts}</div>{alert}{notes}'
        f"{racks.render(data)}{gantt.render(data)}{graph.render(data)}{tenantview.render(site.tenants)}"
        f"</main>{script}</body></html>"
    )
