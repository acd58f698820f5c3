"""The page's colours and stylesheet, inline so the file opens anywhere without a network."""

from __future__ import annotations

# Node cell colours by state; the failed one is meant to be impossible to miss.
STATE_COLOURS: dict[str, str] = {
    "blank": "#eceff1",
    "booting": "#90caf9",
    "installing": "#ffe082",
    "ready": "#81c784",
    "failed": "#d32f2f",
}
STAGE_COLOURS: dict[str, str] = {
    "power-off": "#9e9e9e",
    "pxe": "#64b5f6",
    "config": "#ba68c8",
    "installed": "#ffb74d",
    "etcd": "#4db6ac",
}
RELEASE_COLOURS: dict[str, str] = {
    "ready": "#81c784",
    "progressing": "#ffe082",
    "blocked": "#ffcc80",
    "failed": "#d32f2f",
    "not-started": "#ffffff",
}
FAILED = STATE_COLOURS["failed"]

CSS = (
    """
*{box-sizing:border-box}
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#212121;background:#fafafa}
header{background:#263238;color:#fff;padding:12px 20px}
header h1{margin:0;font-size:20px}
header .meta{opacity:.8;font-size:12px}
nav a{color:#b3e5fc;margin-right:14px}
main{padding:8px 20px 40px}
section{margin-top:18px}
h2{font-size:16px;border-bottom:2px solid #cfd8dc;padding-bottom:3px}
.summary span{display:inline-block;margin-right:10px;padding:2px 8px;border-radius:10px;
border:1px solid #b0bec5}
.alert{background:#ffebee;border:3px solid #b71c1c;color:#b71c1c;padding:8px 12px;margin:10px 0;
font-weight:600}
.alert a{color:#b71c1c}
.note{background:#fff8e1;border:1px solid #ffb300;padding:6px 10px;margin:8px 0}
.racks{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.rack{background:#fff;border:1px solid #cfd8dc;border-radius:4px;padding:6px;width:190px}
.rack h3{margin:0 0 4px;font-size:13px}
.rack.stuck{border:3px solid #b71c1c}
.rack .why{color:#b71c1c;font-weight:700;font-size:11px;margin-bottom:3px}
.rack .bar{display:flex;height:6px;margin-bottom:5px}
.rack .bar i{display:block;height:6px}
.cell{border:1px solid #b0bec5;border-radius:3px;padding:3px 5px;margin-bottom:3px;font-size:11px;
overflow:hidden}
.cell b{display:block;font-size:12px}
.cell .ev{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;opacity:.85}
.cell .err{display:block;font-weight:700}
.cell.state-failed{border:3px solid #7f0000;color:#fff;box-shadow:0 0 0 2px #ffcdd2}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:12px;height:12px;border:1px solid #90a4ae;vertical-align:-2px;
margin-right:4px}
svg text{font-family:system-ui,sans-serif}
.gantt .lbl{font-size:10px}
.gantt .lbl.slow{fill:#b71c1c;font-weight:700}
.gantt rect.bar.outlier{stroke:#000;stroke-width:1.5}
.gantt rect.bar.failed{fill:#d32f2f}
.gantt rect.bar.running{opacity:.55}
table.medians{border-collapse:collapse;margin:6px 0}
table.medians td,table.medians th{border:1px solid #cfd8dc;padding:2px 8px;text-align:right}
.graph .rel rect{stroke:#607d8b;stroke-width:1}
.graph .rel.r-failed rect{stroke:#7f0000;stroke-width:3}
.graph .rel.held rect{stroke:#e65100;stroke-width:2.5;stroke-dasharray:4 2}
.graph .rel text{font-size:10px}
.graph .rel.r-failed text{fill:#fff;font-weight:700}
.graph path{fill:none;stroke:#b0bec5;stroke-width:1}
.graph path.held{stroke:#e65100;stroke-width:2}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:22px;border-left:1px dashed #90a4ae}
ul.tree{border-left:0;padding-left:0}
ul.tree li{margin:6px 0}
.tenant{display:inline-block;background:#fff;border:1px solid #90a4ae;border-radius:4px;padding:4px 8px}
.tenant:target{outline:3px solid #0288d1}
.tenant .svc{display:inline-block;margin:2px 4px 0 0;padding:0 6px;border-radius:8px;font-size:11px}
.svc.own{background:#c8e6c9;border:1px solid #388e3c}
.svc.inherited{background:#e3f2fd;border:1px solid #1976d2}
"""
    + "".join(f".cell.state-{s}{{background:{c}}}\n" for s, c in STATE_COLOURS.items())
    + "".join(f".gantt rect.s-{s}{{fill:{c}}}\n" for s, c in STAGE_COLOURS.items())
    + "".join(f".graph .rel.r-{s} rect{{fill:{c}}}\n" for s, c in RELEASE_COLOURS.items())
)
