"""Benchmark: the HTML site report of a synthetic 1,000-node site.

The state directory (node records, a ~15,000-event log in the shapes ``up`` writes, the
cluster record, a helmreleases record with one failed release holding up most of the
bundle) is generated first and not timed. Timed: ``write_report`` end to end, as
``provisioner report`` runs it: read the records and the event log, build the timelines and
the graph, render, write the file atomically. Run three times; the slowest counts.

Targets (issue 15): generation <= 2 s and a page <= 5 MB; exits 1 when either is missed.
Run: `make bench-report` (or `python benchmarks/bench_report.py [NODES]`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from provisioner.layout import StateLayout
from provisioner.report import platform, synthetic, write_report
from provisioner.report.platform import bundle_releases

TARGET_SECONDS = 2.0
TARGET_MB = 5.0
RUNS = 3


def main() -> int:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        layout = StateLayout(Path(tmp) / "state")
        view = synthetic.site(nodes, max(1, nodes // 40))
        names = [n.name for n in view.nodes]
        scenario = synthetic.Scenario(
            failed={names[len(names) // 3]},
            slow={names[len(names) // 2]: 5.0},
            platform=True,
            failed_release="cozy-kubeovn/kubeovn",
        )
        events = synthetic.write_state(layout, view, scenario)
        releases = {k: r.depends for k, r in bundle_releases("paas-full").items()}
        synthetic.helmreleases_record(layout, "cozy-kubeovn/kubeovn", releases, time.time())
        times = []
        for _ in range(RUNS):
            platform._bundle_entries.cache_clear()  # every run cold, as one `provisioner report` is
            t0 = time.perf_counter()
            path = write_report(view, layout)
            times.append(time.perf_counter() - t0)
        size_mb = path.stat().st_size / 1e6
    worst = max(times)
    print(f"site: {nodes} nodes in {len(view.rack_order)} racks, {events} events, bundle {view.bundle}")
    print(f"runs: {', '.join(f'{t:.3f} s' for t in times)}")
    size_ok, time_ok = size_mb <= TARGET_MB, worst <= TARGET_SECONDS
    print(f"report-size: {size_mb:.2f} MB for {nodes} nodes (target <= {TARGET_MB:g} MB)")
    print(f"bench-report: {worst:.2f} s for {nodes} nodes (target <= {TARGET_SECONDS:g} s)")
    if not size_ok:
        print(f"FAILED: the page is {size_mb:.2f} MB, over {TARGET_MB:g} MB", file=sys.stderr)
    return 0 if size_ok and time_ok else 1


if __name__ == "__main__":
    sys.exit(main())
