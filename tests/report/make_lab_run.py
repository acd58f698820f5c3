"""``data/lab-run/`` is the recorded state of a real, finished lab run.

It was copied from a lab end-to-end run (2026-12-02: the e2e rehearsal of
``inventory/examples/lab.yaml``, cp1-cp3 and w1 in rack ``lab``, QEMU under TCG, ``up --until
cluster``): its ``events.jsonl``, ``nodes/`` and ``cluster.json`` (no secrets, configs or
kubeconfig). To refresh it, copy a newer run's ``state/lab/{events.jsonl,nodes/,cluster.json}``
over it, or point ``PROVISIONER_REPORT_LAB_RUN`` at one. This script writes a synthetic stand-in
of the same shape instead, for when no lab run is at hand:

    .venv/bin/python tests/report/make_lab_run.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from provisioner.inventory import load_inventory
from provisioner.layout import StateLayout
from provisioner.report import synthetic, view_of

HERE = Path(__file__).resolve().parent
LAB_INVENTORY = HERE.parents[1] / "inventory" / "examples" / "lab.yaml"


def main() -> None:
    target = HERE / "data" / "lab-run"
    shutil.rmtree(target, ignore_errors=True)
    view = view_of(load_inventory(LAB_INVENTORY).site)
    synthetic.write_state(StateLayout(target), view, synthetic.Scenario(start=1_796_150_000.0, seed=4))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
