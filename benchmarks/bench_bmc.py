"""BMC fan-out benchmark: 100 IPMI + 100 Redfish emulated BMCs, 50 ms per round trip, as `up` drives them.

One round for every node: power off -> boot PXE (next boot only) -> power on, each verified, run
through `up`'s own BMC gate (provisioner/workflow/bmcgate.py ``BMCGate.call``: its threads, or its
worker processes as `up` runs them, by default as many as `up` starts for this many nodes on this
machine (``default_processes``: one for 200 nodes on 2 cores), ``--bmc-processes N`` to choose,
each node's calls in the same one; its RackLimiter with `up`'s defaults 32 and 8, its controller
settings from the site's timeouts and its once-per-run credentials), one call per step as `up`'s
node flow makes them: off and PXE once with ``keep=True``, so the node's one controller (one IPMI
session, one Redfish connection) serves its three steps and the power-on closes it (the default,
``--session per-node``).
``--session per-step`` connects, logs in and logs out for every step, as `up` did before, to size
that difference.

Ideal (from the protocols, never from what the client happened to send): the minimal round trips for the
three verified operations, times the latency, divided by the concurrency limit:
- IPMI 2.0 lanplus, one session: Get Channel Authentication Capabilities, Open Session, RAKP 1/2, RAKP 3/4,
  Set Session Privilege Level (5), Chassis Control off + Get Chassis Status (2), Set System Boot Options
  (boot flags) + Get System Boot Options (2), Chassis Control on + Get Chassis Status (2), Close Session
  (1): 12 round trips.
- Redfish with HTTP basic auth (credentials ride in every request, no session round trip): GET the
  service root (1), POST ComputerSystem.Reset + GET the system (2), PATCH Boot + GET (2), POST Reset +
  GET (2): 7 requests. (TLS handshakes are not counted, as the emulators do not delay them.)
Worker processes, if any, are started (libraries loaded) before the first round, as the benchmark's
own process has its libraries loaded, and serve every round, as they serve a whole `up`; their CPU
is counted with the client's. The emulators delay every answer by the latency and count what they
answered: every IPMI datagram (session set-up included) and every HTTP request. Target: wall <= 1.5x
ideal; exits 1 on a miss, on a failed node or a wrong final state. The figures printed also give
client vs emulator CPU per round trip, since both share the machine's cores.

Run: make bench-bmc  (or .venv/bin/python benchmarks/bench_bmc.py --help)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.bmc import ControllerSettings
from provisioner.bmc import ipmi as _ipmi_driver  # noqa: F401
from provisioner.bmc import redfish as _redfish_driver  # noqa: F401
from provisioner.inventory import load_inventory
from provisioner.inventory.model import Node, Site
from provisioner.lab.bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec, RedfishServiceSpec
from provisioner.lab.faults import FaultSpec
from provisioner.lab.machine import MachineSpec
from provisioner.workflow import nodeflow
from provisioner.workflow.bmcgate import BMCGate, default_processes
from provisioner.workflow.bmcprocs import BMCProcesses

PASSWORD = "bench-bmc-password"
TARGET = 1.5
# Minimal round trips per node for off + PXE once + on, each verified (see the module docstring).
IPMI_SESSION = 5 + 1  # establishment (auth caps, open session, RAKP1/2, RAKP3/4, privilege) + close
IPMI_MINIMUM = IPMI_SESSION + 3 * 2
REDFISH_MINIMUM = 1 + 3 * 2


def machine(i: int) -> MachineSpec:
    return MachineSpec(
        name=f"n{i:03d}",
        uuid=f"00000000-0000-4000-8000-{i:012d}",
        serial=f"B{i:04d}",
        macs=(f"52:54:00:aa:{i // 256:02x}:{i % 256:02x}",),
    )


def node_doc(fleet: BmcFleet, m: MachineSpec, i: int, rack_size: int) -> dict[str, Any]:
    ep = fleet.endpoints[m.name]
    bmc: dict[str, Any] = {
        "protocol": ep.protocol,
        "address": ep.address,
        "port": ep.port,
        "username": "admin",
        "password": "file:bmc-password",
    }
    if ep.protocol == "redfish":
        bmc["ca_file"] = str(fleet.ca_file)
    else:
        bmc["cipher_suite"] = 3  # what the emulator (pyghmi's server) offers; the lab inventory says so too
    return {
        "name": m.name,
        "rack": f"rack{i // rack_size:03d}",
        "role": "controlplane" if i == 0 else "worker",
        "bmc": bmc,
        "boot": {"mode": "uefi", "mac": m.macs[0]},
        "uuid": m.uuid,
        "ip": f"10.1.{i // 250}.{i % 250 + 1}",
        "data_disks": ["/dev/sdb"],
    }


def load_site(workdir: Path, nodes: list[dict[str, Any]]) -> Site:
    """The site `up` would load: its BMC gate takes timeouts and credentials from it."""
    doc = {
        "cluster": {"name": "benchbmc", "bundle": "distro-full"},
        "networks": {
            "management": {"subnet": "10.1.0.0/16", "gateway": "10.1.255.254"},
            "netboot": {"server": "10.1.255.254"},
        },
        "racks": [{"name": r} for r in sorted({str(n["rack"]) for n in nodes})],
        "nodes": nodes,
    }
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_inventory(path).site


def client_seconds(workers: BMCProcesses | None) -> float:
    """CPU seconds of the client: this process and its BMC worker processes."""
    return time.process_time() + (workers.cpu_seconds() if workers is not None else 0.0)


def run_round(
    site: Site, concurrency: int, per_rack: int, session: str, workers: BMCProcesses | None
) -> dict[str, str | None]:
    """Every node through off -> PXE once -> on via `up`'s BMC gate, with `up`'s own operations
    and worker processes; node -> error text or None."""
    keep = session == "per-node"  # `up`'s node flow: the session stays open until the power-on
    steps = ((nodeflow.POWER_OFF, keep), (nodeflow.PXE_ONCE, keep), (nodeflow.POWER_ON, False))

    async def fan_out() -> dict[str, str | None]:
        gate = BMCGate(site, concurrency, per_rack, processes=workers or 0)

        async def one(n: Node) -> tuple[str, str | None]:
            try:
                for step, held in steps:
                    await gate.call(n, step, keep=held)
            except Exception as exc:
                return n.name, f"{type(exc).__name__}: {exc}"
            return n.name, None

        try:
            return dict(await asyncio.gather(*(one(n) for n in site.nodes)))
        finally:
            gate.close()

    return asyncio.run(fan_out())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipmi", type=int, default=100)
    ap.add_argument("--redfish", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32, help="`up --bmc-concurrency` (default 32)")
    ap.add_argument("--per-rack", type=int, default=8, help="`up --per-rack` (default 8)")
    ap.add_argument("--rack-size", type=int, default=8)
    ap.add_argument("--session", choices=("per-step", "per-node"), default="per-node")
    ap.add_argument("--runs", type=int, default=3, help="rounds; the median ratio is judged")
    ap.add_argument(
        "--bmc-processes",
        type=int,
        default=None,
        help="`up --bmc-processes` (default: as `up` chooses for this many nodes on this machine)",
    )
    ap.add_argument(
        "--emulator-processes",
        type=int,
        default=0,
        help="emulator child processes per protocol (default: automatic, see bmc_fleet)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-bmc-") as tmp:
        secrets = Path(tmp) / "bmc-password"  # beside the generated site.yaml
        secrets.write_text(PASSWORD)
        os.chmod(secrets, 0o600)
        total = args.ipmi + args.redfish
        machines = [machine(i) for i in range(total)]
        spec = FleetSpec(
            workdir=Path(tmp) / "fleet",
            password=PASSWORD,
            ipmi=tuple(IpmiBmcSpec(m) for m in machines[: args.ipmi]),
            redfish=tuple(RedfishServiceSpec((m,)) for m in machines[args.ipmi :]),
            faults=FaultSpec(latency=args.latency),
            processes=args.emulator_processes,
        )
        racks = -(-total // args.rack_size)
        limit = min(args.concurrency, args.per_rack * racks)
        ideal = (args.ipmi * IPMI_MINIMUM + args.redfish * REDFISH_MINIMUM) * args.latency / limit
        ratios: list[float] = []
        problems: list[str] = []
        with BmcFleet(spec) as fleet, contextlib.ExitStack() as stack:
            # Interleave protocols so every rack mixes IPMI and Redfish nodes.
            order = [
                m for pair in zip(machines[: args.ipmi], machines[args.ipmi :], strict=False) for m in pair
            ]
            order += machines[min(args.ipmi, args.redfish) * 2 :]
            site = load_site(Path(tmp), [node_doc(fleet, m, i, args.rack_size) for i, m in enumerate(order)])
            nodes = site.nodes
            settings = ControllerSettings.for_node_timeout(site.cluster.timeouts.bmc_command)
            workers = None
            if args.bmc_processes is None:
                args.bmc_processes = default_processes(len(nodes))
            if args.bmc_processes > 0:
                workers = BMCProcesses(args.bmc_processes, site.base_dir, settings, threads=args.concurrency)
                stack.callback(workers.close)
                workers.start()
            print(
                f"BMCs:             {args.ipmi} IPMI + {args.redfish} Redfish (emulated, loopback), "
                f"latency {args.latency * 1000:.0f} ms per round trip"
            )
            print(
                f"concurrency:      {args.concurrency} global, {args.per_rack} per rack, {args.rack_size} "
                f"nodes per rack, through `up`'s BMC gate, {args.bmc_processes} BMC worker process(es)"
            )
            print(f"round:            off -> PXE once -> on, verified; session {args.session}")
            print(
                f"ideal:            {ideal:.2f} s = ({args.ipmi} x {IPMI_MINIMUM} IPMI + {args.redfish} x "
                f"{REDFISH_MINIMUM} Redfish round trips) x {args.latency * 1000:.0f} ms / {limit}"
            )
            for run in range(1, args.runs + 1):
                before = fleet.stats_by_protocol()
                emu_cpu = fleet.cpu_seconds()
                client_cpu = client_seconds(workers)
                start = time.monotonic()
                errors = run_round(site, args.concurrency, args.per_rack, args.session, workers)
                wall = time.monotonic() - start
                client_cpu = client_seconds(workers) - client_cpu
                emu_cpu = fleet.cpu_seconds() - emu_cpu
                after = fleet.stats_by_protocol()
                ipmi_rt = after.get("ipmi", {}).get("replies", 0) - before.get("ipmi", {}).get("replies", 0)
                rf_rt = after.get("redfish", {}).get("requests", 0) - before.get("redfish", {}).get(
                    "requests", 0
                )
                trips = ipmi_rt + rf_rt
                wrong = [
                    n.name
                    for n in nodes
                    if not (
                        fleet.state(n.name)["powered"] and fleet.state(n.name)["boots"][-1]["device"] == "pxe"
                    )
                ]
                failed = {k: v for k, v in errors.items() if v}
                problems += [f"{k}: {v}" for k, v in failed.items()] + [
                    f"{k}: wrong final state" for k in wrong
                ]
                ratios.append(wall / ideal)
                print(
                    f"run {run}: wall {wall:.2f} s, ratio {wall / ideal:.2f}; round trips per node: "
                    f"IPMI {ipmi_rt / max(args.ipmi, 1):.1f} (minimum {IPMI_MINIMUM}), Redfish "
                    f"{rf_rt / max(args.redfish, 1):.1f} (minimum {REDFISH_MINIMUM}); CPU per round trip: "
                    f"client {client_cpu / trips * 1000:.2f} ms, emulators {emu_cpu / trips * 1000:.2f} ms "
                    f"({os.cpu_count()} cores); failed {len(failed)}, wrong state {len(wrong)}"
                )
    for line in problems[:10]:
        print(f"  {line}")
    median = sorted(ratios)[len(ratios) // 2]
    print(f"bench-bmc: {median:.2f}x the protocol ideal, median of {len(ratios)} runs (target <= {TARGET:g})")
    return 0 if median <= TARGET and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
