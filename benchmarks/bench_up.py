"""bench-up: each node's power-on -> installed time against the virtual lab, and the total.

A fresh private lab (3 control planes + 1 worker) goes through `provisioner up` once.
Per node: from its power-on to its installed OS answering over mutual TLS. Total: from
the first power-on to the last node installed. Target: total <= 1.3x the slowest node,
i.e. the nodes really progress side by side instead of waiting on each other.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from provisioner.lab.rehearsal import LabRun


def main() -> int:
    if os.geteuid() != 0:
        print("bench-up needs root (network namespaces, taps, QEMU)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        run = LabRun.create(Path(tmp), cluster="benchup")
        try:
            t0 = time.monotonic()
            rc, result = run.up()
            wall = time.monotonic() - t0
            if rc != 0:
                print(json.dumps(result, indent=1), file=sys.stderr)
                print(f"up failed (exit {rc}); see {run.workdir / 'up.log'}", file=sys.stderr)
                return 1
            on: dict[str, float] = {}
            done: dict[str, float] = {}
            for ev in run.events.iter():
                if ev.kind == "node.step" and ev.node:
                    if ev.data.get("phase") == "powered-on":
                        on[ev.node] = ev.time
                    elif ev.data.get("phase") == "installed":
                        done[ev.node] = ev.time
        finally:
            run.down()
    per_node = {n: done[n] - on[n] for n in done}
    total = max(done.values()) - min(on.values())
    slowest = max(per_node.values())
    print(f"{'node':<8} power-on -> installed")
    for name, secs in sorted(per_node.items()):
        print(f"{name:<8} {secs:8.1f} s")
    print(f"total (first power-on -> last installed): {total:.1f} s")
    print(f"slowest node: {slowest:.1f} s; ratio total/slowest: {total / slowest:.2f} (target <= 1.3)")
    print(f"whole `up` including cluster formation: {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
