"""Real BMC emulators on loopback for the BMC tests: pyghmi IPMI servers and sushy-tools Redfish."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.inventory.model import Node
from provisioner.lab.bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec, RedfishServiceSpec
from provisioner.lab.machine import MachineSpec

PASSWORD = "fleet-pw-7f3a9c"


def machine(i: int, name: str | None = None) -> MachineSpec:
    return MachineSpec(
        name=name or f"n{i}",
        uuid=f"7ab0c7b2-0c1d-4a4e-9d1a-{i:012d}",
        serial=f"SER-{i:04d}",
        macs=(f"52:54:00:10:{i // 256:02x}:{i % 256:02x}", f"52:54:00:20:{i // 256:02x}:{i % 256:02x}"),
    )


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("secrets")
    p = d / "bmc-password"
    p.write_text(PASSWORD + "\n")
    os.chmod(p, 0o600)
    return d


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcFleet]:
    """ipmi1..ipmi3 behind IPMI BMCs; rf1 alone on one Redfish port, rf2+rf3 sharing another."""
    spec = FleetSpec(
        workdir=tmp_path_factory.mktemp("fleet"),
        password=PASSWORD,
        ipmi=tuple(IpmiBmcSpec(machine(i, f"ipmi{i}")) for i in (1, 2, 3)),
        redfish=(
            RedfishServiceSpec((machine(11, "rf1"),)),
            RedfishServiceSpec((machine(12, "rf2"), machine(13, "rf3"))),
        ),
    )
    with BmcFleet(spec) as f:
        yield f


def make_node(fleet: BmcFleet, name: str, i: int, *, rack: str = "r1", **bmc: Any) -> Node:
    """An inventory node whose BMC is the emulator serving machine ``name``."""
    ep = fleet.endpoints[name]
    bmc_data: dict[str, Any] = {
        "protocol": ep.protocol,
        "address": ep.address,
        "port": ep.port,
        "username": "admin",
        "password": "file:bmc-password",
    }
    if ep.protocol == "redfish":
        bmc_data["ca_file"] = str(fleet.ca_file)
    bmc_data.update(bmc)
    m = machine(i, name)
    return Node.model_validate(
        {
            "name": name,
            "rack": rack,
            "role": "worker",
            "bmc": bmc_data,
            "boot": {"mode": "uefi", "mac": m.macs[0]},
            "uuid": m.uuid,
            "serial": m.serial,
            "ip": f"10.0.{i // 250}.{i % 250 + 1}",
        }
    )
