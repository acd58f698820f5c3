"""Crash at every persisted transition, rerun, and end where an uninterrupted run ends.

The transitions are enumerated from the code: every node phase a record can take
(``state.Phase``), every flag of the cluster record (``ClusterState``) turning true, and the
moment between Bootstrap and its record. The "crash" is an exception nothing in the tool
catches (``Crash``), raised right after the transition is on disk: the run's tasks are
abandoned mid-flight as a SIGKILL would leave them, while the fake machines go on booting.
The platform stages' transitions (every stage record, the apply journal, a run killed with a real
SIGKILL at each) are ``test_platform_crash_points.py``, against the Kubernetes API stand-in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from provisioner.inventory.model import Site
from provisioner.layout import StateLayout
from provisioner.pipeline.stages import HARDWARE_STAGES
from provisioner.pipeline.up import up
from provisioner.state import NodeRecord, Phase, StateStore
from provisioner.workflow.clusterflow import ClusterState

from .conftest import make_site
from .fakes import Crash, FakeTalos, World

NODE = "cp2"  # a control plane that does not bootstrap: it joins the cluster others form
TRANSITIONS = [
    *(f"node:{p.value}" for p in Phase if p is not Phase.BLANK),
    "bootstrap-before-record",
    *(f"cluster:{f.name}" for f in dataclasses.fields(ClusterState) if f.type in ("bool", bool)),
]


def _run(site: Site, world: World, talos: FakeTalos) -> None:
    up(
        site,
        list(site.nodes),
        "lines",
        poll=0.02,
        talos=talos,
        bmc_connect=world.controller,
        netboot=None,
        stages=HARDWARE_STAGES,
    )


def _final(site: Site) -> dict[str, object]:
    layout = StateLayout(site.state_dir)
    store = StateStore(site.state_dir)
    return {
        "nodes": {n.name: (store.node(n.name).phase.value, store.node(n.name).installed) for n in site.nodes},
        "cluster": {
            k: v for k, v in json.loads(layout.cluster_record.read_text()).items() if k != "bootstrap_node"
        },
        "kubeconfig": layout.kubeconfig.is_file(),
    }


def test_transitions_are_enumerated_from_the_code() -> None:
    assert "node:config-delivered" in TRANSITIONS and "node:ready" in TRANSITIONS
    assert {"cluster:bootstrapped", "cluster:formed"} <= set(TRANSITIONS)


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_crash_at_transition_then_rerun(
    transition: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path)
    secrets = StateLayout(site.state_dir).secrets.read_bytes()
    world = World(site.nodes, StateLayout(site.state_dir).events)
    talos = FakeTalos(world, crash_after_bootstrap=transition == "bootstrap-before-record")
    kind, _, what = transition.partition(":")
    fired: list[str] = []

    if kind == "node":
        real_save = StateStore.save

        def save(self: StateStore, record: NodeRecord) -> NodeRecord:
            saved = real_save(self, record)
            if not fired and record.name == NODE and record.phase.value == what:
                fired.append(transition)
                raise Crash(transition)
            return saved

        monkeypatch.setattr(StateStore, "save", save)
    elif kind == "cluster":
        real_cluster_save = ClusterState.save

        def cluster_save(self: ClusterState, path: Path) -> None:
            real_cluster_save(self, path)
            if not fired and getattr(self, what):
                fired.append(transition)
                raise Crash(transition)

        monkeypatch.setattr(ClusterState, "save", cluster_save)

    with pytest.raises(Crash):
        _run(site, world, talos)
    monkeypatch.undo()
    assert fired or kind == "bootstrap-before-record"

    talos.crash_after_bootstrap = False
    _run(site, world, talos)  # the rerun, as after a kill -9
    final = _final(site)
    assert final == {
        "nodes": {n.name: ("ready", True) for n in site.nodes},
        "cluster": {"bootstrapped": True, "formed": True, "members": ["cp1", "cp2", "cp3"]},
        "kubeconfig": True,
    }
    assert world.calls["bootstrap"] == 1, "bootstrap exactly once"
    assert all(world.calls[f"install:{n.name}"] == 1 for n in site.nodes), "no node installed twice"
    assert StateLayout(site.state_dir).secrets.read_bytes() == secrets
