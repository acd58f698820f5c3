"""Talos machine API figures: client <-> stand-in apid on 127.0.0.1 (``make bench-talosapi``).

Prints latencies of the operations the provisioner performs per node (TLS handshake + RPC on a new
connection, RPCs on a kept connection, ApplyConfiguration, Kubeconfig) and the stand-in's own start-up
cost (import with pure-Python protobuf, serve_maintenance). Inside a TCG lab VM Python runs ~20x slower,
so multiply the stand-in side accordingly.

Figure judged: the median of "mTLS: talosconfig load + new connection + Version", the probe `up` makes
for every node on every poll while waiting for the installed OS. Comparison: an absolute budget of
TARGET_MS per probe (a TLS 1.3 handshake with Ed25519 plus one unary RPC costs ~1-3 ms of CPU on each
side; the budget leaves room for a loaded machine), so 1,000 nodes polled every 2 s cost well under a
core. Exits 1 when missed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioner.lab.standin import apid  # noqa: E402
from provisioner.lab.standin.backend import ApplyMode, ApplyResult, EtcdMember, ServiceStatus, VersionInfo  # noqa: E402
from provisioner.talos import pki  # noqa: E402
from provisioner.talos.talosconfig import render_talosconfig  # noqa: E402
from provisioner.talosapi.client import TalosClient  # noqa: E402

CONFIG = b"version: v1alpha1\nmachine:\n  install:\n    disk: /dev/vda\ncluster:\n  clusterName: bench\n" + (
    b"# padding to a realistic controlplane config size\n" * 600
)
KUBECONFIG = os.urandom(48 * 1024).hex().encode()[: 64 * 1024]


class Node:
    """A backend that answers instantly: the figures are the API's, not a node's."""

    def hostname(self) -> str:
        return "bench"

    def disks(self) -> list[str]:
        return ["/dev/vda"]

    def apply_config(self, data: bytes, mode: ApplyMode, dry_run: bool) -> ApplyResult:
        return ApplyResult(mode=mode)

    def bootstrap(self, recover_etcd: bool) -> None:
        return None

    def etcd_members(self) -> list[EtcdMember]:
        return [EtcdMember(1, "bench")]

    def services(self) -> list[ServiceStatus]:
        return [ServiceStatus("apid", "Running", healthy=True)]

    def kubeconfig(self) -> bytes:
        return KUBECONFIG

    def reset(self, graceful: bool, reboot: bool, mode: object) -> None:
        return None

    def version(self) -> VersionInfo:
        return VersionInfo(tag="v1.11.6-standin")


async def timed(n: int, fn: Callable[[], Awaitable[object]]) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


TARGET_MS = 25.0


def report(name: str, samples: list[float]) -> float:
    """Print median and p95 of ``samples`` (ms); returns the median."""
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    print(f"{name:<52} median {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms   (n={len(samples)})")
    return float(statistics.median(samples))


def import_cost() -> float:
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "PYTHONPATH": str(REPO), "PATH": "/usr/bin"}
    code = (
        "import time; t=time.perf_counter(); import provisioner.lab.standin.apid; "
        "print(time.perf_counter()-t)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        * 1000
        for _ in range(5)
    ]
    return statistics.median(runs)


async def main() -> int:
    print(f"stand-in apid import (pure-Python protobuf)           median {import_cost():7.2f} ms   (n=5)")
    node = Node()
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        server = await apid.serve_maintenance("127.0.0.1", 0, node)
        starts.append((time.perf_counter() - t) * 1000)
        await server.stop()
    report("serve_maintenance start (Ed25519 cert + bind)", starts)

    maint = await apid.serve_maintenance("127.0.0.1", 0, node)
    pin = maint.spki_sha256

    async def fresh_maintenance_version() -> None:
        async with TalosClient.maintenance("127.0.0.1", port=maint.port, pin=pin) as c:
            await c.version()

    report("maintenance: new connection + pin + Version", await timed(30, fresh_maintenance_version))
    async with TalosClient.maintenance("127.0.0.1", port=maint.port, pin=pin) as c:
        await c.version()
        report(
            f"maintenance: ApplyConfiguration ({len(CONFIG) // 1024} KiB), kept conn",
            await timed(50, lambda: c.apply_configuration(CONFIG)),
        )
    await maint.stop()

    ca = pki.new_ca("talos", "ed25519")
    assert ca.crt is not None
    configured = await apid.serve_configured("127.0.0.1", 0, node, ca.crt, ca.key, ["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "talosconfig"
        admin = pki.new_client_cert(ca, "os:admin")
        cfg.write_bytes(render_talosconfig("bench", ["127.0.0.1"], ca.crt, admin))
        os.chmod(cfg, 0o600)

        async def fresh_mtls_version() -> None:
            async with TalosClient.from_talosconfig(cfg, port=configured.port) as c:
                await c.version()

        probe = report(
            "mTLS: talosconfig load + new connection + Version", await timed(30, fresh_mtls_version)
        )
        async with TalosClient.from_talosconfig(cfg, port=configured.port) as c:
            await c.version()
            report("mTLS: Version, kept connection", await timed(200, c.version))
            report("mTLS: EtcdMemberList, kept connection", await timed(200, c.etcd_member_list))
            report(
                f"mTLS: Kubeconfig ({len(KUBECONFIG) // 1024} KiB, tar.gz stream + unpack)",
                await timed(50, c.kubeconfig),
            )
    await configured.stop()
    print(
        f"bench-talosapi: {probe:.2f} ms per mTLS probe (talosconfig + connection + Version) "
        f"(target <= {TARGET_MS:g} ms)"
    )
    return 0 if probe <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
