"""Regenerate ``data/lab-run/``: the recorded state directory of a finished lab run.

The lab inventory (``inventory/examples/lab.yaml``: cp1-cp3 and w1 in rack ``lab``) went
through ``up``; events have the kinds and fields the real writers emit (see
``provisioner/report/synthetic.py``). To test against a real run instead, copy a lab
run's ``state/lab/{events.jsonl,nodes/,cluster.json}`` over ``data/lab-run`` or point
``PROVISIONER_REPORT_LAB_RUN`` at it.

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
