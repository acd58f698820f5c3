"""A machine config goes over the maintenance API only to the machine the operator identified.

Under ``config_delivery: apply`` (and for a re-apply under URL delivery) a config, with the
cluster's keys in it, would go to whatever answers TLS on the node's address. It is sent only
with the certificate pin the node shows on its console (``--pin``), or with ``--insecure-apply``.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from provisioner.inventory.model import Site
from provisioner.lab.standin import apid
from provisioner.layout import StateLayout
from provisioner.pipeline.context import RunContext
from provisioner.pipeline.stages import HARDWARE_STAGES
from provisioner.pipeline.up import UpResult, up
from provisioner.talos.configs import generate_configs
from provisioner.workflow import nodeflow
from provisioner.workflow.progress import Progress
from provisioner.workflow.talos_ops import TalosOps

from .conftest import make_site
from .fakes import FakeTalos, World


def _run(site: Site, world: World, **options: object) -> UpResult:
    return up(
        site,
        list(site.nodes),
        "lines",
        poll=0.02,
        talos=FakeTalos(world),
        bmc_connect=world.controller,
        netboot=None,
        stages=HARDWARE_STAGES,
        options=dict(options),
    )


def test_no_pin_and_no_consent_sends_no_config(tmp_path: Path) -> None:
    site = make_site(tmp_path, delivery="apply")
    world = World(site.nodes, StateLayout(site.state_dir).events, apply_delivery=True)
    result = _run(site, world)
    assert not result.ok and world.calls["apply"] == 0
    assert all("--pin" in (n.error or "") and "--insecure-apply" in (n.error or "") for n in result.nodes)


def test_pins_identify_the_machines_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    site = make_site(tmp_path, delivery="apply")
    world = World(site.nodes, StateLayout(site.state_dir).events, apply_delivery=True)
    world.machines["w1"].spki = "cd" * 32  # another machine answers on w1's address
    pins = {n.name: "ab" * 32 for n in site.nodes}
    result = _run(site, world, pins=pins)
    outcome = {n.name: n for n in result.nodes}
    assert [n for n, o in outcome.items() if not o.ok] == ["w1"] and result.cluster == "formed"
    assert "is not w1" in (outcome["w1"].error or "") and "no config was sent" in (outcome["w1"].error or "")
    assert world.calls["install:w1"] == 0 and world.calls["apply"] == 3


def test_insecure_apply_is_allowed_and_logged(tmp_path: Path) -> None:
    site = make_site(tmp_path, delivery="apply")
    world = World(site.nodes, StateLayout(site.state_dir).events, apply_delivery=True)
    result = _run(site, world, insecure_apply=True)
    assert result.ok and world.calls["apply"] == 4
    events = [e for e in StateLayout(site.state_dir).events.read_text().splitlines() if '"identity"' in e]
    assert len(events) == 4 and all("--insecure-apply" in e for e in events)


def _recording_backend() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "talosapi" / "conftest.py"
    spec = importlib.util.spec_from_file_location("talosapi_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("right_pin", [False, True])
def test_a_real_maintenance_api_with_another_key_gets_no_config(tmp_path: Path, right_pin: bool) -> None:
    """The stand-in's maintenance API on the node's address, its key pinned or not."""
    helpers = _recording_backend()
    site = make_site(tmp_path, delivery="apply")
    generate_configs(site)
    # The machine answers on loopback, where the stand-in's maintenance API listens.
    site = site.model_copy(
        update={"nodes": [n.model_copy(update={"ip": n.ip.__class__("127.0.0.1")}) for n in site.nodes[:1]]}
    )
    node = site.nodes[0]
    backend = helpers.RecordingBackend()

    async def scenario() -> None:
        server = await apid.serve_maintenance("127.0.0.1", 0, backend)
        try:
            pin = server.spki_sha256 if right_pin else "ef" * 32
            ctx = RunContext.for_site(site, Progress(None, "lines"), options={"pins": {node.name: pin}})
            ctx.talos = TalosOps(ctx.layout.talosconfig, port=server.port)
            await nodeflow._apply(ctx, node)
        finally:
            await server.stop()

    if right_pin:
        asyncio.run(scenario())
        assert [name for name, _ in backend.calls].count("apply_config") == 1
    else:
        with pytest.raises(nodeflow.NodeFailed, match="is not cp1"):
            asyncio.run(scenario())
        assert backend.calls_to("apply_config") == []  # the config never reached the other machine


def test_url_delivery_reboots_a_node_found_in_maintenance_instead_of_pushing_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodeflow, "MAINTENANCE_GRACE", 0.5)  # longer than a fake boot + install
    site = make_site(tmp_path)
    world = World(site.nodes, StateLayout(site.state_dir).events)
    world.machines["w1"].lose_install_once = True
    result = _run(site, world)
    assert result.ok, result.as_dict()
    assert world.calls["apply"] == 0  # nothing went over the unauthenticated maintenance API
    assert world.machines["w1"].log.count("boot pxe") == 2 and world.calls["install:w1"] == 1
