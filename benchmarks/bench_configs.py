"""Benchmark: machine configs for a generated 1,000-node site, written to disk.

Prints the one-off secrets generation (RSA-4096 and the CAs: once per cluster), the wall
time of `generate_configs` for every node (render, checks, 0600 atomic writes, talosconfig)
and nodes/s, then a second, no-change run (what a re-run costs).

Comparison: an absolute budget, not a ratio. A 1,000-node site's configs must be ready in
<= 5 s, so that `up` spends its time on the machines and not on rendering (the ideal, rendering
each role once and stamping per-node values, is what configs.py does). Exits 1 when missed.
Run: `make bench-configs` (or `python benchmarks/bench_configs.py [NODES] [TALOS_VERSION]`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import netaddr

from provisioner.inventory.model import Site
from provisioner.talos.configs import generate_configs
from provisioner.talos.secrets import ensure_secrets

TARGET_SECONDS = 5.0


def build_site(nodes: int, state_dir: Path, version: str) -> Site:
    subnet = netaddr.IPNetwork("10.20.0.0/20")
    hosts = list(subnet.iter_hosts())
    racks = [f"r{i:02d}" for i in range(max(1, nodes // 40))]
    node_list = []
    for i in range(nodes):
        role = "controlplane" if i < 3 else "worker"
        node_list.append(
            {
                "name": f"{'cp' if i < 3 else 'w'}{i:04d}",
                "rack": racks[i % len(racks)],
                "role": role,
                "boot": {"mac": str(netaddr.EUI(0x525400000000 + i, dialect=netaddr.mac_unix_expanded))},
                "ip": str(hosts[20 + i]),
                "install_disk": "/dev/nvme0n1",
                "data_disks": ["/dev/nvme1n1"],
                "labels": {"topology.kubernetes.io/zone": racks[i % len(racks)]},
            }
        )
    return Site.model_validate(
        {
            "cluster": {
                "name": "bench",
                "bundle": "paas-full",
                "root_host": "bench.example.com",
                "talos": {"version": version},
                "state_dir": str(state_dir),
            },
            "networks": {
                "management": {
                    "subnet": str(subnet),
                    "gateway": str(hosts[0]),
                    "dns": [str(hosts[0])],
                    "ntp": [str(hosts[0])],
                    "vip": str(hosts[9]),
                }
            },
            "racks": [{"name": r} for r in racks],
            "nodes": node_list,
        }
    )


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    version = sys.argv[2] if len(sys.argv) > 2 else "v1.11.6"
    with tempfile.TemporaryDirectory(prefix="bench-configs-") as tmp:
        site = build_site(count, Path(tmp) / "state", version)
        t0 = time.perf_counter()
        ensure_secrets(site)
        t_secrets = time.perf_counter() - t0

        t0 = time.perf_counter()
        paths = generate_configs(site)
        t_gen = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in paths.values())

        t0 = time.perf_counter()
        generate_configs(site)
        t_again = time.perf_counter() - t0

    print(f"site: {count} nodes, Talos {version}")
    print(f"secrets bundle (once per cluster): {t_secrets:.2f} s")
    print(
        f"configs generate (render + checks + write {len(paths)} files, {size / 1e6:.1f} MB): "
        f"{t_gen:.2f} s wall, {len(paths) / t_gen:.0f} nodes/s"
    )
    print(f"configs generate again (no changes): {t_again:.2f} s wall, {len(paths) / t_again:.0f} nodes/s")
    print(f"bench-configs: {t_gen:.2f} s for {count} nodes (target <= {TARGET_SECONDS:g} s)")
    return 0 if t_gen <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
