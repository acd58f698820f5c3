"""``python -m provisioner.lab.fleet up --nodes N``: a simulated fleet through the real `up`.

Prints the `up` process's figures (or ``--json``: the whole ``FleetResult``). Needs root: the
fleet gets its own network namespace. Exit code 0 when every node is ready and the cluster formed
(`up` is stopped where it starts the Kubernetes stages, which the fleet does not simulate), 1
otherwise, 2 for bad options.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from . import harness
from .plan import Delays, FleetPlan


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m provisioner.lab.fleet", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a simulated fleet and run `provisioner up` on it")
    up.add_argument("--nodes", type=int, required=True, help="simulated machines (3 are control planes)")
    up.add_argument("--workdir", type=Path, help="keep inventory, state and logs here (default: temporary)")
    up.add_argument("--redfish-every", type=int, default=4, help="every n-th BMC is Redfish (0: none)")
    up.add_argument("--bmc-latency", type=float, default=0.0, help="seconds per BMC round trip")
    up.add_argument("--boot-delay", type=float, default=0.0, help="power-on -> netboot request, seconds")
    up.add_argument("--install-delay", type=float, default=0.0, help="config fetched -> installed, seconds")
    up.add_argument("--profile", type=Path, help="write a cProfile of the `up` process here")
    up.add_argument("--sample", type=Path, help="write py-spy's samples of `up` (all threads) here")
    up.add_argument("--timeout", type=float, default=900.0, help="kill `up` after this many seconds")
    up.add_argument("--json", action="store_true", help="print the full result as JSON")
    up.add_argument("up_args", nargs="*", help="passed to `provisioner up` (after --)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.nodes < 3:
        print("error: --nodes: at least 3 (the control planes)", file=sys.stderr)
        return 2
    if not harness.in_private_netns():
        return harness.reexec_in_netns(["-m", "provisioner.lab.fleet", *argv])
    harness.loopback_up()
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="fleet-")
        workdir = Path(tmp)
    try:
        plan = FleetPlan(
            nodes=args.nodes,
            workdir=workdir.resolve(),
            redfish_every=args.redfish_every,
            delays=Delays(bmc_latency=args.bmc_latency, boot=args.boot_delay, install=args.install_delay),
        )
        result = harness.run(
            plan, tuple(args.up_args), profile=args.profile, timeout=args.timeout, sample=args.sample
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(result.to_json())
    else:
        formed = "never" if result.formed_s is None else f"{result.formed_s:.1f} s"
        print(
            f"fleet: {result.nodes} nodes, up exit {result.exit_code}, wall {result.wall_s:.1f} s "
            f"(cluster formed at {formed}), "
            f"CPU {result.cpu_ms_per_node:.1f} ms/node, peak RSS {result.peak_rss_mb:.0f} MB, "
            f"installed {result.installed}, bootstraps {len(result.bootstraps)}"
        )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
