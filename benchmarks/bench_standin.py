"""Benchmark of the Talos stand-in agent on the host (dir platform, loopback): prints its figures.

Figures: import cost of the agent entry point and of each mode's modules (under TCG in a lab VM
Python runs ~20x slower, so these are what a VM pays at every boot), agent start -> maintenance
API answering, maintenance apply -> configured (mutual TLS) API answering, and Bootstrap -> three
voting etcd members with the real etcd binary.

Figure judged: Bootstrap -> three voting etcd members (the longest step of cluster formation in the
lab). Comparison: an absolute budget of TARGET_SECONDS on the host. The floor is etcd's own: each
learner joins, catches up and is promoted one after another (the stand-in polls for promotion, as
Talos does), so a few seconds per member; the budget allows a loaded 2-core machine. Exits 1 when
missed.

Run: ``make bench-standin`` (or ``.venv/bin/python benchmarks/bench_standin.py``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "standin"))

from standin_helpers import Machine, Netboot, Secrets, loopback_prefix, machine_config, version, wait_for  # noqa: E402


def import_seconds(module: str) -> float:
    """Wall time of a fresh interpreter importing ``module`` minus a bare interpreter's start."""

    def timed(code: str) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
            best = min(best, time.perf_counter() - t)
        return best

    return timed(f"import {module}") - timed("pass")


TARGET_SECONDS = 15.0


def main() -> int:
    voting_s = float("inf")
    print("talos stand-in benchmark (host, dir platform; a TCG VM is ~20x slower for Python)")
    for mod in (
        "provisioner.lab.standin.agent",
        "provisioner.lab.standin.apid",
        "provisioner.lab.standin.kubeconfig",
    ):
        print(f"  import {mod}: {import_seconds(mod) * 1000:.0f} ms")

    secrets = Secrets.new()
    netboot = Netboot()
    prefix = loopback_prefix()
    endpoint = f"https://{prefix}.100:6443"
    machines: list[Machine] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-standin-") as tmp:
            t0 = time.perf_counter()
            for i in (1, 2, 3):
                m = Machine(
                    Path(tmp) / f"cp{i}", f"{prefix}.{i}", f"cp{i}", f"uuid-{i}", netboot.cmdline(None)
                )
                m.start()
                machines.append(m)
            for m in machines:
                wait_for("maintenance", lambda m=m: version(m.maintenance()), interval=0.05)
            print(f"  3 agents start -> maintenance API answering: {time.perf_counter() - t0:.2f} s")

            async def apply(m: Machine) -> None:
                async with m.maintenance() as c:
                    await c.apply_configuration(
                        machine_config(secrets, kind="controlplane", hostname=m.hostname, endpoint=endpoint)
                    )

            async def apply_all() -> None:
                await asyncio.gather(*(apply(m) for m in machines))

            t0 = time.perf_counter()
            asyncio.run(apply_all())
            for m in machines:
                wait_for(
                    "configured", lambda m=m: version(m.mtls(secrets)).platform_mode == "metal", interval=0.05
                )
            print(
                f"  apply (maintenance) -> install -> configured mTLS API: {time.perf_counter() - t0:.2f} s "
                "(includes the 0.2 s action delay)"
            )

            async def bootstrap() -> None:
                async with machines[0].mtls(secrets) as c:
                    await c.bootstrap()

            async def voting() -> int:
                async with machines[0].mtls(secrets) as c:
                    members = await c.etcd_member_list()
                return sum(1 for x in members if not x.is_learner)

            t0 = time.perf_counter()
            asyncio.run(bootstrap())
            t_boot = time.perf_counter() - t0
            wait_for("3 voting members", lambda: asyncio.run(voting()) == 3, timeout=120, interval=0.1)
            voting_s = time.perf_counter() - t0
            print(
                f"  Bootstrap RPC (etcd started, healthy): {t_boot:.2f} s; "
                f"-> 3 voting etcd members: {voting_s:.2f} s"
            )
    finally:
        for m in machines:
            m.stop()
        netboot.close()
    print(
        f"bench-standin: {voting_s:.2f} s Bootstrap -> 3 voting etcd members (target <= {TARGET_SECONDS:g} s)"
    )
    return 0 if voting_s <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
