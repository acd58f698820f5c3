"""A BMC protocol that exists only in this test: registered here, used by ``up`` unchanged.

Adding a protocol is a settings model and a driver factory given to the registry; the
inventory, ``connect`` and the node flow follow it without any product file knowing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from provisioner.bmc import BMCSettings, registry
from provisioner.bmc.base import Driver
from provisioner.bmc.registry import DriverRequest, Registration
from provisioner.inventory import InventoryError
from provisioner.layout import StateLayout
from provisioner.pipeline.stages import HARDWARE_STAGES
from provisioner.pipeline.up import up

from .conftest import make_site
from .fakes import FakeDriver, FakeTalos, World

WORLDS: dict[str, World] = {}  # the toy "BMC network": node name -> the world its machine is in
SEEN: list[tuple[str, int, str]] = []  # (node, slot, password) each factory call was given


class ToySettings(BMCSettings):
    protocol: Literal["toy"] = "toy"
    slot: int = Field(ge=1, le=8)  # an option only this protocol has

    def default_port(self) -> int:
        return 7000 + self.slot


def _toy_driver(req: DriverRequest) -> Driver:
    assert isinstance(req.settings, ToySettings)
    SEEN.append((req.node, req.settings.slot, req.password))
    world = WORLDS[req.node]
    return FakeDriver(world, world.machines[req.node])


@pytest.fixture
def toy() -> Iterator[None]:
    registry.register(Registration(name="toy", settings=ToySettings, factory=_toy_driver))
    yield
    registry.unregister("toy")
    WORLDS.clear()
    SEEN.clear()


def test_toy_protocol_drives_the_node_flow(tmp_path: Path, toy: None) -> None:
    site = make_site(tmp_path, protocol="toy", extra=", slot: 3")
    bmc = site.nodes[0].bmc
    assert isinstance(bmc, ToySettings) and bmc.endpoint == "toy://10.98.1.1:7003"
    world = World(site.nodes, StateLayout(site.state_dir).events)
    WORLDS.update(dict.fromkeys(world.machines, world))
    result = up(
        site,
        list(site.nodes),
        progress_mode="lines",
        poll=0.02,
        talos=FakeTalos(world),
        netboot=None,
        stages=HARDWARE_STAGES,  # the platform stages need a Kubernetes API
    )
    assert result.ok and result.cluster == "formed", result.as_dict()
    assert world.machines["w1"].log == ["power off", "boot pxe", "power on", "boot disk persistent"]
    # The factory got the protocol's own option and the password resolved from env:FAKE_BMC_PW.
    assert {(n, s, p) for n, s, p in SEEN} == {(n.name, 3, "fake-password") for n in site.nodes}


def test_toy_protocol_options_are_validated_with_their_location(tmp_path: Path, toy: None) -> None:
    with pytest.raises(InventoryError) as info:
        make_site(tmp_path, protocol="toy", extra=", slot: 9")
    assert [p.path for p in info.value.problems] == [
        "nodes[0].bmc.slot",
        "nodes[1].bmc.slot",
        "nodes[2].bmc.slot",
        "nodes[3].bmc.slot",
    ]


def test_unregistered_protocol_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        make_site(tmp_path, protocol="toy", extra=", slot: 3")
    assert "unknown BMC protocol 'toy' (known: ipmi, redfish)" in str(info.value)
