"""The BMC gate keeps a node's limiter slot across its kept steps (off, PXE once, on: one visit),
gives it back with the last step, on a failure and on ``release``, and runs calls on a fixed set
of worker threads rather than a thread per call."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from provisioner.inventory import load_inventory
from provisioner.inventory.model import Node, Site
from provisioner.workflow.bmcgate import BMCGate


def _site(tmp_path: Path, count: int) -> Site:
    nodes = "".join(
        f"""
  - name: n{i}
    rack: r1
    role: {"controlplane" if i == 0 else "worker"}
    bmc: {{protocol: ipmi, address: 127.0.0.1, port: {10000 + i}, username: admin,
          password: "file:bmc-password"}}
    boot: {{mode: uefi, mac: "52:54:00:bb:00:{i:02x}"}}
    ip: 10.98.0.{11 + i}
    data_disks: [/dev/sdb]
"""
        for i in range(count)
    )
    (tmp_path / "bmc-password").write_text("pw\n")
    (tmp_path / "bmc-password").chmod(0o600)
    (tmp_path / "site.yaml").write_text(
        f"""
cluster:
  name: gate
  bundle: distro-full
  state_dir: {tmp_path / "state"}
networks:
  management: {{subnet: 10.98.0.0/24, gateway: 10.98.0.1, vip: 10.98.0.10}}
  metallb: {{range: 10.98.0.100-10.98.0.110}}
  netboot: {{server: 10.98.0.1}}
nodes:{nodes}"""
    )
    return load_inventory(tmp_path / "site.yaml").site


class _Controller:
    """Stands in for a BMC controller: the gate only runs ``fn`` on it and closes it."""

    def __init__(self, node: str, log: list[str]) -> None:
        self.node, self.log = node, log

    def close(self) -> None:
        self.log.append(f"{self.node} close")


def _gate(site: Site, total: int, log: list[str]) -> BMCGate:
    return BMCGate(site, total, total, connect_fn=lambda node: _Controller(node.name, log))  # type: ignore[arg-type,return-value]


def _step(name: str, log: list[str]):  # type: ignore[no-untyped-def]
    def fn(c: _Controller) -> str:
        log.append(f"{c.node} {name} on {threading.current_thread().name}")
        return name

    return fn


def test_a_node_keeps_its_slot_from_power_off_to_power_on(tmp_path: Path) -> None:
    site = _site(tmp_path, 2)
    log: list[str] = []

    async def visit(gate: BMCGate, node: Node) -> None:
        await gate.call(node, _step("off", log), keep=True)
        await asyncio.sleep(0.05)  # the record write between steps: nobody else gets the slot
        await gate.call(node, _step("pxe", log), keep=True)
        await gate.call(node, _step("on", log))

    async def main() -> None:
        gate = _gate(site, 1, log)
        await asyncio.gather(*(visit(gate, n) for n in site.nodes))

    asyncio.run(main())
    steps = [" ".join(line.split()[:2]) for line in log]
    assert steps == ["n0 off", "n0 pxe", "n0 on", "n0 close", "n1 off", "n1 pxe", "n1 on", "n1 close"]


def test_a_failed_kept_step_and_release_give_the_slot_back(tmp_path: Path) -> None:
    site = _site(tmp_path, 2)
    log: list[str] = []

    def fault(c: _Controller) -> None:
        raise RuntimeError("BMC fault")

    async def main() -> None:
        gate = _gate(site, 1, log)
        a, b = site.nodes
        with pytest.raises(RuntimeError, match="BMC fault"):
            await gate.call(a, fault, keep=True)
        assert await asyncio.wait_for(gate.call(b, _step("off", log), keep=True), 2) == "off"
        await gate.release(b)  # b stops early (a failed record, say): its slot and session go back
        assert gate._held.names() == set() and gate._slots == {}
        assert await asyncio.wait_for(gate.call(a, _step("on", log)), 2) == "on"

    asyncio.run(main())
    assert [" ".join(line.split()[:2]) for line in log] == [
        "n0 close",
        "n1 off",
        "n1 close",
        "n0 on",
        "n0 close",
    ]


def test_calls_run_on_at_most_total_worker_threads(tmp_path: Path) -> None:
    site = _site(tmp_path, 6)
    log: list[str] = []

    async def main() -> None:
        gate = _gate(site, 2, log)
        for _ in range(3):
            await asyncio.gather(*(gate.call(n, _step("status", log)) for n in site.nodes))

    asyncio.run(main())
    threads = {line.rsplit(" on ", 1)[1] for line in log if " on " in line}
    assert len([line for line in log if "status" in line]) == 18
    assert threads <= {"bmc-worker-1", "bmc-worker-2"} and len(threads) >= 1
