"""The report in headless Chromium: no console errors, one cell per node, a failed node in
red, Gantt bars in stage order; screenshots go to tests/artifacts/."""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from provisioner.events import EventLog
from provisioner.fsutil import atomic_write
from provisioner.layout import StateLayout
from provisioner.report import write_report
from provisioner.report.platform import STATES as RELEASE_STATES
from provisioner.report.render.style import FAILED
from provisioner.report.serve import ReportServer
from provisioner.report.timeline import NODE_STAGES
from provisioner.report.view import SiteView

from .conftest import FAILED_NODES, FAILED_RELEASE, SLOW_NODE, console_errors, screenshot

ROWS_JS = """
return Array.from(document.querySelectorAll('svg.gantt g.row')).map(function (g) {
  return [g.dataset.node, Array.from(g.querySelectorAll('rect.bar')).map(function (r) {
    return [r.dataset.stage, r.x.baseVal.value, r.width.baseVal.value, r.getAttribute('class')];
  })];
});
"""
CELLS_JS = """
return Array.from(document.querySelectorAll('.cell')).map(function (c) {
  return [c.dataset.node, c.dataset.state, getComputedStyle(c).backgroundColor];
});
"""


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _open(browser: Any, path: Path) -> None:
    console_errors(browser)  # drop what earlier pages logged
    browser.get(path.as_uri())
    assert browser.title.endswith("site report")


def _assert_gantt_order(rows: list[Any], expected_nodes: list[str]) -> None:
    assert [node for node, _ in rows] == expected_nodes, f"Gantt rows out of inventory order: {rows[:8]}"
    for node, bars in rows:
        stages = [b[0] for b in bars]
        assert stages == list(NODE_STAGES[: len(stages)]), f"{node}: bars out of stage order: {stages}"
        for prev, cur in itertools.pairwise(bars):
            assert cur[1] >= prev[1] + prev[2] - 1.6, f"{node}: {cur[0]} starts before {prev[0]} ends"


def test_lab_run(browser: Any, lab_run: tuple[SiteView, StateLayout]) -> None:
    view, layout = lab_run
    path = write_report(view, layout)
    assert path == layout.report
    _open(browser, path)
    cells = browser.execute_script(CELLS_JS)
    assert [c[0] for c in cells] == ["cp1", "cp2", "cp3", "w1"], cells
    assert {c[1] for c in cells} == {"ready"}, cells
    rows = browser.execute_script(ROWS_JS)
    _assert_gantt_order(rows, ["cp1", "cp2", "cp3", "w1"])
    by_node = dict(rows)
    assert [b[0] for b in by_node["cp1"]] == list(NODE_STAGES)  # control planes join etcd
    assert [b[0] for b in by_node["w1"]] == list(NODE_STAGES[:-1])  # workers do not
    states = browser.execute_script(
        "return Array.from(document.querySelectorAll('.graph g.rel')).map(g => g.dataset.state)"
    )
    if layout.platform_stage("helmreleases").exists():  # a real lab run that went on to the platform
        assert len(states) >= 76 and set(states) <= set(RELEASE_STATES)
    else:  # the platform has not run: the bundle's graph is drawn, every release not started
        assert len(states) == 76 and set(states) == {"not-started"}
    tenants = browser.execute_script(
        "return Array.from(document.querySelectorAll('.tenant')).map(t => t.dataset.namespace)"
    )
    assert tenants == ["tenant-root", "tenant-demo", "tenant-demo-dev"]  # lab.yaml: demo has a grandchild
    screenshot(browser, "report-lab-run.png")
    assert console_errors(browser) == []


def test_1000_nodes(browser: Any, site_1000: tuple[SiteView, StateLayout], tmp_path: Path) -> None:
    view, layout = site_1000
    path = write_report(view, layout, tmp_path / "report.html")
    _open(browser, path)
    cells = browser.execute_script(CELLS_JS)
    assert len(cells) == 1000
    failed = {c[0]: c[2] for c in cells if c[1] == "failed"}
    assert set(failed) == set(FAILED_NODES)
    assert set(failed.values()) == {_rgb(FAILED)}
    assert {c[2] for c in cells if c[1] == "ready"} == {"rgb(129, 199, 132)"}
    stuck = browser.execute_script(
        "return Array.from(document.querySelectorAll('.rack.stuck')).map(r => r.dataset.rack)"
    )
    assert stuck == ["r03", "r17"]
    rows = browser.execute_script(ROWS_JS)
    _assert_gantt_order(rows, [n.name for n in view.nodes])
    by_node = dict(rows)
    # A failed node's last bar is the stage it failed in, drawn as failed.
    assert [b[0] for b in by_node[FAILED_NODES[0]]] == ["power-off", "pxe"]
    assert "failed" in by_node[FAILED_NODES[0]][-1][3]
    # The slow install is outlined and the node marked slow.
    assert "outlier" in dict((b[0], b[3]) for b in by_node[SLOW_NODE])["installed"]
    slow_labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.gantt text.slow')).map(t => t.textContent)"
    )
    assert any(label.startswith(SLOW_NODE) for label in slow_labels)
    failed_release = browser.execute_script(
        "return document.querySelector(arguments[0]).getAttribute('class')",
        f'.graph g.rel[data-release="{FAILED_RELEASE}"]',
    )
    assert "r-failed" in failed_release
    stage_rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.gantt rect[data-kind=\"platform\"]'))"
        ".map(r => [r.dataset.stage, r.getAttribute('class')])"
    )
    stages = [s for s, _ in stage_rows]
    assert stages[:4] == ["secrets", "machine-configs", "netboot", "nodes"]
    assert stages[-4:] == ["api-ready", "contract", "installer-assets", "helmreleases"]
    assert "failed" in stage_rows[-1][1]  # the helmreleases stage failed with kubeovn
    held = browser.execute_script("return document.querySelectorAll('.graph g.rel.held').length")
    assert held > 40  # kubeovn holds up most of paas-full
    screenshot(browser, "report-1000-nodes.png")
    browser.execute_script("document.getElementById('platform').scrollIntoView()")
    screenshot(browser, "report-1000-platform.png")
    assert console_errors(browser) == []


def test_served_page_refreshes_as_events_arrive(browser: Any, lab_run: tuple[SiteView, StateLayout]) -> None:
    view, layout = lab_run
    # Put w1 back to "installing", as during a run, then let it finish while the page is open.
    # Records are replaced as the state store replaces them (a new file renamed over the old):
    # an in-place rewrite changes neither the directory nor the event log, so a page built
    # between the event and such a rewrite would never see it (the flake this once was).
    record = json.loads(layout.node_record("w1").read_text())
    atomic_write(
        layout.node_record("w1"), json.dumps({**record, "phase": "config-delivered", "installed": False})
    )
    with ReportServer(view, layout, "127.0.0.1", 0, poll_ms=200) as server:
        console_errors(browser)
        browser.get(server.url)
        state = "return document.querySelector('.cell[data-node=\"w1\"]').dataset.state"
        assert browser.execute_script(state) == "installing"
        before = browser.execute_script("return document.documentElement.dataset.version")
        EventLog(layout.events).append("node.step", node="w1", phase="ready", detail="boots from disk")
        urllib.request.urlopen(server.url, timeout=10).read()  # a page built between the two writes
        atomic_write(layout.node_record("w1"), json.dumps({**record, "phase": "ready", "installed": True}))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if browser.execute_script(state) == "ready":
                    break
            except Exception:  # the page is being reloaded
                pass
            time.sleep(0.2)
        assert browser.execute_script(state) == "ready"
        assert browser.execute_script("return document.documentElement.dataset.version") != before
        last = browser.execute_script(
            "return document.querySelector('.cell[data-node=\"w1\"] .ev').textContent"
        )
        assert "boots from disk" in last
        screenshot(browser, "report-served.png")
        assert console_errors(browser) == []
