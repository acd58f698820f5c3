"""One BMC session per node for power off, PXE once and power on, against a real (emulated) IPMI
BMC on loopback: the three steps log in once, the power-on closes the session, and a step that
fails drops its session so the next one logs in afresh (a fault never reuses a broken session).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from provisioner.bmc import BMCController
from provisioner.inventory.model import Node
from provisioner.lab.bmc_fleet import BmcFleet
from provisioner.state import Phase
from provisioner.workflow import nodeflow
from provisioner.workflow.bmcgate import BMCGate

from .test_nodeflow_bmc import _ipmitool, _run, _site, fleet  # noqa: F401 - the module's BMC fixture


def _counting(gate: BMCGate) -> list[BMCController]:
    """Every controller the gate connects (each one's first command logs in)."""
    made: list[BMCController] = []
    real = gate._connect

    def connect(node: Node) -> BMCController:
        controller = real(node)
        made.append(controller)
        return controller

    gate._connect = connect
    return made


def test_off_pxe_on_share_one_session(tmp_path: Path, fleet: BmcFleet) -> None:  # noqa: F811
    run = _run(_site(tmp_path, fleet, boot_timeout=5, retries=0))
    gate = run.ctx.bmc
    assert isinstance(gate, BMCGate)
    made = _counting(gate)

    async def steps() -> None:
        await nodeflow.power_off(run.ctx, run.node)
        rec = await nodeflow.set_pxe_once(run.ctx, run.node)
        await nodeflow.power_on(run.ctx, run.node, rec)

    asyncio.run(steps())
    assert len(made) == 1, "off, PXE once and on must share one login"
    assert gate._held.names() == set(), "the power-on closes the session"
    assert run.store.node("silent").phase is Phase.POWERED_ON
    assert "Chassis Power is on" in _ipmitool(fleet, "chassis", "power", "status")


def test_a_failed_step_drops_its_session(tmp_path: Path, fleet: BmcFleet) -> None:  # noqa: F811
    run = _run(_site(tmp_path, fleet, boot_timeout=5, retries=0))
    gate = run.ctx.bmc
    assert isinstance(gate, BMCGate)
    made = _counting(gate)

    def fault(controller: BMCController) -> None:
        raise RuntimeError("session fault")

    async def steps() -> None:
        await gate.call(run.node, lambda c: c.power_state(), keep=True)
        with pytest.raises(RuntimeError, match="session fault"):
            await gate.call(run.node, fault, keep=True)
        assert gate._held.names() == set()
        await gate.call(run.node, lambda c: c.power_state(), keep=True)
        assert gate._held.names() == {"silent"}
        await gate.release(run.node)

    asyncio.run(steps())
    assert len(made) == 2, "the step after a fault logs in again; the one before it reused nothing"
    assert gate._held.names() == set()
