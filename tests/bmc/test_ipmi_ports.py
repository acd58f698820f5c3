"""A new IPMI session to a BMC never starts from the UDP port of the previous session to it (a BMC
still holding the old session would take the new log-in's packets for it)."""

from __future__ import annotations

from pathlib import Path

from provisioner.bmc import PowerState, connect
from provisioner.bmc.controller import ControllerSettings
from provisioner.lab.bmc_fleet import BmcFleet

from .conftest import make_node

FAST = ControllerSettings(command_timeout=5, attempts=2, backoff_initial=0.05, verify_timeout=2)


def _session_port(fleet: BmcFleet, secrets_dir: Path) -> int:
    node = make_node(fleet, "ipmi3", 3, cipher_suite=3)
    with connect(node, secrets_dir, FAST) as ctl:
        assert ctl.power_state() in (PowerState.ON, PowerState.OFF)
        session = ctl.driver._session  # type: ignore[attr-defined]
        port: int = session.socket.getsockname()[1]
    return port


def test_consecutive_sessions_to_one_bmc_use_different_ports(fleet: BmcFleet, secrets_dir: Path) -> None:
    ports = [_session_port(fleet, secrets_dir) for _ in range(3)]
    assert ports[0] != ports[1] and ports[1] != ports[2], ports
