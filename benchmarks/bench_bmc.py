"""BMC fan-out benchmark: 100 IPMI + 100 Redfish emulated BMCs, 50 ms per request.

One round for every node: power off -> boot PXE (next boot) -> power on, each verified.
Prints wall time, operations/s and the ratio to the ideal, where the ideal is
(requests the BMCs served x latency / concurrency): the time the same requests would
take with the latency as the only cost and the concurrency limit always full. Requests
are counted by the emulators (every IPMI command and every HTTP request; the IPMI
session handshake packets are neither delayed nor counted). Target ratio <= 1.5.

Run: make bench-bmc  (or .venv/bin/python benchmarks/bench_bmc.py --help)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.bmc import BootDevice, ControllerSettings, connect, run_on_nodes
from provisioner.bmc import ipmi as _ipmi_driver  # noqa: F401
from provisioner.bmc import redfish as _redfish_driver  # noqa: F401
from provisioner.inventory.model import Node
from provisioner.lab.bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec, RedfishServiceSpec
from provisioner.lab.faults import FaultSpec
from provisioner.lab.machine import MachineSpec

PASSWORD = "bench-bmc-password"


def machine(i: int) -> MachineSpec:
    return MachineSpec(
        name=f"n{i:03d}",
        uuid=f"00000000-0000-4000-8000-{i:012d}",
        serial=f"B{i:04d}",
        macs=(f"52:54:00:aa:{i // 256:02x}:{i % 256:02x}",),
    )


def node(fleet: BmcFleet, m: MachineSpec, i: int, rack_size: int) -> Node:
    ep = fleet.endpoints[m.name]
    bmc = {
        "protocol": ep.protocol,
        "address": ep.address,
        "port": ep.port,
        "username": "admin",
        "password": "file:bmc-password",
    }
    if ep.protocol == "redfish":
        bmc["ca_file"] = str(fleet.ca_file)
    return Node.model_validate(
        {
            "name": m.name,
            "rack": f"rack{i // rack_size}",
            "role": "worker",
            "bmc": bmc,
            "boot": {"mode": "uefi", "mac": m.macs[0]},
            "uuid": m.uuid,
            "ip": f"10.1.{i // 250}.{i % 250 + 1}",
        }
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipmi", type=int, default=100)
    ap.add_argument("--redfish", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--per-rack", type=int, default=8)
    ap.add_argument("--rack-size", type=int, default=8)
    ap.add_argument(
        "--emulator-processes",
        type=int,
        default=0,
        help="emulator child processes per protocol (default: automatic, see bmc_fleet)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-bmc-") as tmp:
        secrets = Path(tmp) / "secrets"
        secrets.mkdir()
        (secrets / "bmc-password").write_text(PASSWORD)
        os.chmod(secrets / "bmc-password", 0o600)
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
        settings = ControllerSettings(command_timeout=10, verify_poll=0.05)
        with BmcFleet(spec) as fleet:
            # Interleave protocols so every rack mixes IPMI and Redfish nodes.
            order = [
                m for pair in zip(machines[: args.ipmi], machines[args.ipmi :], strict=False) for m in pair
            ]
            order += machines[min(args.ipmi, args.redfish) * 2 :]
            nodes = [node(fleet, m, i, args.rack_size) for i, m in enumerate(order)]

            def round_trip(n: Node) -> None:
                with connect(n, secrets, settings) as ctl:
                    ctl.power_off()
                    ctl.set_boot_device(BootDevice.PXE)
                    ctl.power_on()

            before = fleet.stats()["requests"]
            emu_cpu = fleet.cpu_seconds()
            client_cpu = time.process_time()
            start = time.monotonic()
            results = run_on_nodes(nodes, round_trip, concurrency=args.concurrency, per_rack=args.per_rack)
            wall = time.monotonic() - start
            client_cpu = time.process_time() - client_cpu
            emu_cpu = fleet.cpu_seconds() - emu_cpu
            requests = fleet.stats()["requests"] - before
            wrong = [
                n.name
                for n in nodes
                if not (
                    fleet.state(n.name)["powered"] and fleet.state(n.name)["boots"][-1]["device"] == "pxe"
                )
            ]

    failed = [r for r in results.values() if not r.ok]
    ops = 3 * total
    ideal = requests * args.latency / args.concurrency
    print(
        f"BMCs:             {args.ipmi} IPMI + {args.redfish} Redfish (emulated, loopback), "
        f"latency {args.latency * 1000:.0f} ms/request"
    )
    print(
        f"concurrency:      {args.concurrency} global, {args.per_rack} per rack, "
        f"{args.rack_size} nodes per rack"
    )
    print(f"round:            power off -> boot PXE (once) -> power on, verified; {ops} operations")
    print(f"requests served:  {requests} ({requests / total:.1f} per node)")
    print(f"wall time:        {wall:.2f} s")
    print(f"operations/s:     {ops / wall:.1f}")
    print(f"ideal:            {ideal:.2f} s (requests x latency / concurrency)")
    print(
        f"CPU time:         client {client_cpu:.2f} s, emulators {emu_cpu:.2f} s "
        f"({(client_cpu + emu_cpu) / requests * 1000:.2f} ms per request; {os.cpu_count()} cores)"
    )
    print(f"ratio to ideal:   {wall / ideal:.2f} (target <= 1.5)")
    print(f"failed nodes:     {len(failed)}; wrong final state: {len(wrong)}")
    for r in failed[:10]:
        print(f"  {r.node}: {r.error}")
    return 1 if failed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
