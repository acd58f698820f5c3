"""Benchmark: load and validate a generated 10,000-node inventory.

Generates a realistic site (racks of 40 nodes, IPMI and Redfish BMCs with secret
references, UEFI boot, data disks, labels, a tenant tree) into a temporary directory,
then times ``load_inventory`` end to end: file read, YAML parse, model validation and
cross-checks. Prints the wall time and nodes per second.

Comparison: an absolute budget, not a ratio: a 10,000-node site validates in <= 3 s (best of
the runs), so `validate` stays interactive at any realistic site size. Exits 1 when missed.

Usage: python benchmarks/bench_inventory.py [--nodes N] [--repeat R] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioner.inventory import load_inventory  # noqa: E402

TARGET_SECONDS = 3.0
NODES_PER_RACK = 40


def generate(nodes: int) -> str:
    """YAML text of a paas-full site with ``nodes`` nodes on a /16 management network."""
    subnet = ipaddress.IPv4Network("10.20.0.0/16")
    racks = (nodes + NODES_PER_RACK - 1) // NODES_PER_RACK
    out = [
        "cluster:",
        "  name: bench",
        "  bundle: paas-full",
        "  root_host: bench.example.org",
        "networks:",
        "  management:",
        f"    subnet: {subnet}",
        "    gateway: 10.20.0.1",
        "    dns: [10.20.0.2, 10.20.0.3]",
        "    ntp: [ntp.example.org]",
        "    vip: 10.20.0.10",
        "    dhcp: {range: 10.20.250.0-10.20.250.255}",
        "  metallb: {range: 10.20.251.0-10.20.251.255}",
        "  netboot: {server: 10.20.0.5}",
        "racks:",
    ]
    out += [f"  - name: r{r:03d}" for r in range(racks)]
    out.append("nodes:")
    for i in range(nodes):
        rack = i // NODES_PER_RACK
        ip = subnet.network_address + 256 + i  # 10.20.1.0 onwards
        bmc_ip = ipaddress.IPv4Address("10.30.0.0") + i
        role = "controlplane" if i in (0, NODES_PER_RACK, 2 * NODES_PER_RACK) else "worker"
        if i % 2:
            bmc = (
                f"{{protocol: redfish, address: {bmc_ip}, username: admin, password: 'env:BMC_PASSWORD', "
                f"verify_tls: true, ca_file: /etc/provisioner/bmc-ca.pem}}"
            )
        else:
            bmc = (
                f"{{protocol: ipmi, address: {bmc_ip}, username: admin, password: 'file:secrets/bmc-{rack}'}}"
            )
        out += [
            f"  - name: n{i:05d}",
            f"    rack: r{rack:03d}",
            f"    role: {role}",
            f"    bmc: {bmc}",
            f"    boot: {{mode: uefi, mac: '02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01'}}",
            f"    uuid: 00000000-0000-4000-8000-{i:012x}",
            f"    serial: SN{i:08d}",
            f"    ip: {ip}",
            "    install_disk: /dev/nvme0n1",
            "    data_disks: [/dev/sdb, /dev/sdc]",
            f"    labels: {{topology.kubernetes.io/zone: r{rack:03d}, node.example.org/tier: gold}}",
        ]
    out += [
        "tenants:",
        "  root:",
        "    etcd: true",
        "    ingress: true",
        "    monitoring: true",
        "    children:",
        "      team1: {ingress: true, children: {dev: {}, prod: {monitoring: true}}}",
    ]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--profile", action="store_true", help="print the top functions of one run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
        path = Path(tmp) / "site.yaml"
        path.write_text(generate(args.nodes), encoding="utf-8")
        size = path.stat().st_size
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            inv = load_inventory(path)
            times.append(time.perf_counter() - start)
        assert len(inv.site.nodes) == args.nodes, "generated inventory did not load completely"
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(load_inventory, path)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)

    best = min(times)
    print(f"inventory: {args.nodes} nodes, {size / 1e6:.1f} MB YAML, {len(inv.warnings)} warnings")
    print(f"load_inventory wall time: best {best:.3f} s, runs {', '.join(f'{t:.3f}' for t in times)}")
    print(f"throughput: {args.nodes / best:,.0f} nodes/s")
    print(f"bench-inventory: {best:.3f} s for {args.nodes} nodes (target <= {TARGET_SECONDS:g} s)")
    return 0 if best <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
