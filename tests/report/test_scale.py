"""The issue's budget on a 1,000-node site: generation <= 2 s, page <= 5 MB."""

from __future__ import annotations

import time
from pathlib import Path

from provisioner.layout import StateLayout
from provisioner.report import write_report
from provisioner.report.view import SiteView


def test_1000_nodes_within_budget(site_1000: tuple[SiteView, StateLayout], tmp_path: Path) -> None:
    view, layout = site_1000
    t0 = time.perf_counter()
    path = write_report(view, layout, tmp_path / "report.html")
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    assert seconds <= 2.0, f"generation took {seconds:.2f} s"
    assert size <= 5_000_000, f"page is {size / 1e6:.2f} MB"
    page = path.read_text()
    assert page.count('class="cell state-') == 1000
    assert page.count('data-kind="node"') >= 4 * 998  # every node's stages are drawn
