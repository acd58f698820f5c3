"""bench-up: `provisioner up` against the virtual lab, from `up` start to the cluster formed.

A fresh private lab (3 control planes + 1 worker, QEMU under TCG, emulated BMCs) goes through
`provisioner up` once, every stage included: secrets and configs, the netboot service, power off,
PXE once, power on, config fetched, installed, boot from disk, then bootstrap, three voting etcd
members and the kubeconfig. Figure: the whole run's wall time T (up started -> up exited with the
cluster formed), read against its ideal.

Ideal: the slowest node's own sequential time plus cluster formation. A node's own time runs from
`up` start (the prologue is on every node's path) to its `ready` step, taken from the event log; with
four nodes and 32 BMC slots nothing is shared that could make one node wait for another, so it is what
that node alone would take. Cluster formation is from the `bootstrap` cluster step to `formed`. If
`up` made nodes wait for each other, or formed the cluster late or slowly, T grows past the ideal.
Target: T <= 1.3x the ideal; exits 1 on a miss or a failed run. Needs root (namespaces, taps, QEMU);
it boots VMs, so it belongs to the integrator's quiet-machine runs, not to `make test`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from provisioner.lab.rehearsal import LabRun

TARGET = 1.3


def main() -> int:
    if os.geteuid() != 0:
        print("bench-up needs root (network namespaces, taps, QEMU)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        run = LabRun.create(Path(tmp), cluster="benchup")
        try:
            t0 = time.time()
            rc, result = run.up()
            wall = time.time() - t0
            if rc != 0 or result.get("cluster") != "formed":
                print(json.dumps(result, indent=1), file=sys.stderr)
                print(f"up failed (exit {rc}); see {run.workdir / 'up.log'}", file=sys.stderr)
                return 1
            ready: dict[str, float] = {}
            bootstrap = formed = None
            for ev in run.events.iter():
                if ev.kind == "node.step" and ev.node and ev.data.get("phase") == "ready":
                    ready[ev.node] = ev.time
                elif ev.kind == "cluster.step":
                    step = ev.data.get("step")
                    if step == "bootstrap" and bootstrap is None:
                        bootstrap = ev.time
                    elif step == "formed":
                        formed = ev.time
        finally:
            run.down()
    if not ready or bootstrap is None or formed is None:
        print("the event log lacks the node `ready` or cluster `bootstrap`/`formed` steps", file=sys.stderr)
        return 1
    own = {n: t - t0 for n, t in ready.items()}
    slowest = max(own, key=lambda n: own[n])
    formation = formed - bootstrap
    ideal = own[slowest] + formation
    print(f"{'node':<8} up start -> ready (its own sequential time)")
    for name, secs in sorted(own.items()):
        print(f"{name:<8} {secs:8.1f} s")
    print(f"cluster formation (bootstrap -> formed): {formation:.1f} s")
    print(f"ideal: slowest node {slowest} {own[slowest]:.1f} s + formation {formation:.1f} s = {ideal:.1f} s")
    print(f"up start -> cluster formed (up exited): {wall:.1f} s")
    ratio = wall / ideal
    print(f"bench-up: {ratio:.2f}x the ideal ({wall:.1f} s vs {ideal:.1f} s) (target <= {TARGET:g})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
