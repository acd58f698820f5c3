"""Crash at every persisted transition of the platform stages, rerun, and end where an uninterrupted
run ends (issue 13; the hardware transitions are ``test_crash_points.py``).

A full-bundle (paas-full) site whose hardware is done (secrets, configs, ready node records, a
formed cluster record, the kubeconfig of the host Kubernetes API stand-in with the Cozystack
simulator, Nodes registered as the kubelets would) is driven through ``provisioner up`` in a child
process (``platform_crash_child.py``) that kills itself with SIGKILL right after a named transition
is on disk.

The transitions are enumerated from the code: the uninterrupted reference run logs every persisted
platform write with its label (``<stage>:applied``: the API holds an object the journal does not
know yet, ``<stage>:journal``, ``<stage>:record``, ``<stage>:done``), and every stage ``up`` walks
after the hardware ones (``pipeline/stages.py``: ``stages_for(bundle)`` minus ``HARDWARE_STAGES``)
must be among them, so a new stage, or a new persisted write inside one, is covered without
touching this file.

The crashes form one chain on a second site, run beside the reference on its own stand-in: each run
is killed at the first transition no earlier run was killed at, so run k+1 recovers from exactly
the state a crash at transition k leaves (every earlier transition completed, nothing after it) and
is killed at transition k+1; the run that meets no new transition completes. One install's worth
of work covers every crash point. Then:
- the chain was killed once at each transition of the reference run, in its order, and no rerun
  redid a stage recorded as done;
- the final platform state equals the reference run's: stage records (minus times and counts),
  the apply journal, and every applied object in the API (kind, name, spec/data, labels and
  annotations; never resourceVersion or uid);
- a further ``up`` persists nothing, and a forced re-check of every stage writes nothing;
- the hardware state (secrets.yaml, cluster record, node records, configs, kubeconfig) is
  byte-identical throughout.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.cli import main
from provisioner.cozystack import assets, manifests
from provisioner.cozystack.kube import resource_class
from provisioner.cozystack.releases import cozystack_major
from provisioner.inventory import load_inventory
from provisioner.inventory.model import Site
from provisioner.lab.kube.host import KubeHost, running
from provisioner.layout import StateLayout
from provisioner.pipeline.stages import HARDWARE_STAGES, stages_for
from provisioner.state import NodeRecord, Phase, StateStore
from provisioner.workflow.clusterflow import ClusterState

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("platform_crash_child.py")
BUNDLE = "paas-full"  # the most platform stages: storage, virtualization, networking, tenants
VOLATILE = {"completed", "updated", "writes", "skipped"}  # when and how much, not what


@dataclass
class Run:
    """One site on its own API stand-in: where things are and what its runs logged."""

    root: Path
    host: KubeHost
    inventory: Path = field(init=False)
    site: Site = field(init=False)
    layout: StateLayout = field(init=False)

    def __post_init__(self) -> None:
        self.inventory = self.root / "site.yaml"


def _node(i: int, role: str) -> dict[str, Any]:
    return {
        "name": f"{'cp' if role == 'controlplane' else 'w'}{i % 10}",
        "rack": "r1",
        "role": role,
        "bmc": {
            "protocol": "ipmi",
            "address": f"10.97.1.{i}",
            "username": "a",
            "password": "env:UNUSED_BMC_PW",
        },
        "boot": {"mac": f"52:54:00:97:00:{i:02x}"},
        "ip": f"10.97.0.{i}",
        "data_disks": ["/dev/vdb"],
    }


def _write_site(root: Path, host: KubeHost, secrets: bytes) -> Run:
    """A paas-full site (BMC passwords never read) whose hardware stages are done."""
    run = Run(root, host)
    doc = {
        "cluster": {
            "name": "crash",
            "bundle": BUNDLE,
            "root_host": "crash.cozy.test",
            "state_dir": str(root / "state"),
            "timeouts": {"platform": 120},
        },
        "networks": {
            "management": {"subnet": "10.97.0.0/24", "gateway": "10.97.0.1", "vip": "10.97.0.10"},
            "metallb": {"range": "10.97.0.100-10.97.0.150"},
            "netboot": {"server": "10.97.0.1"},
        },
        "racks": [{"name": "r1"}],
        "nodes": [
            _node(11, "controlplane"),
            _node(12, "controlplane"),
            _node(13, "controlplane"),
            _node(21, "worker"),
        ],
        "tenants": {"root": {"children": {"team": {"ingress": True, "children": {"dev": {}}}}}},
    }
    root.mkdir(parents=True, exist_ok=True)
    run.inventory.write_text(yaml.safe_dump(doc))
    run.site = load_inventory(run.inventory).site
    run.layout = StateLayout(run.site.state_dir)
    run.layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    run.layout.secrets.write_bytes(secrets)  # the same bundle for both sites: RSA-4096 takes seconds
    run.layout.secrets.chmod(0o600)
    quiet(["-i", str(run.inventory), "configs", "generate"])
    quiet(["-i", str(run.inventory), "platform", "assets", "lab-import"])
    store = StateStore(run.site.state_dir)
    for node in run.site.nodes:
        store.save(NodeRecord(node.name, phase=Phase.READY, installed=True))
    cps = [n.name for n in run.site.controlplanes]
    ClusterState(bootstrapped=True, bootstrap_node=cps[0], formed=True, members=cps).save(
        run.layout.cluster_record
    )
    run.layout.kubeconfig.write_bytes(host.kubeconfig.read_bytes())
    run.layout.kubeconfig.chmod(0o600)
    _register_nodes(host, run.site)
    return run


def quiet(argv: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(argv)
    assert rc == 0, out.getvalue()


def _client(host: KubeHost) -> Any:
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig

    return Client(config=KubeConfig.from_file(str(host.kubeconfig)).get(), field_manager="test-kubelet")


def _register_nodes(host: KubeHost, site: Site) -> None:
    """Play the kubelets: Nodes with the inventory's names, InternalIPs and disks."""
    from lightkube import codecs
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    c = _client(host)
    for node in site.nodes:
        meta = {
            "name": node.name,
            "labels": {"kubernetes.io/hostname": node.name},
            "annotations": {"lab.provisioner/disks": ",".join(node.data_disks)},
        }
        c.apply(codecs.from_dict({"apiVersion": "v1", "kind": "Node", "metadata": meta}), force=True)
        status = {"status": {"addresses": [{"type": "InternalIP", "address": str(node.ip)}]}}
        c.patch(Node.Status, node.name, status, patch_type=PatchType.MERGE)


def _child(run: Run, log: Path, crash_skip: list[str] | None) -> subprocess.Popen[bytes]:
    """``provisioner up`` in a child that logs its transitions to ``log`` and, with ``crash_skip``,
    kills itself at the first transition not listed there."""
    env = {**os.environ, "PV_STATE_DIR": str(run.site.state_dir), "PV_CRASH_LOG": str(log)}
    if crash_skip is not None:
        env["PV_CRASH_SKIP"] = ",".join(crash_skip)
    with open(run.root / "up.out", "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(CHILD), "-i", str(run.inventory), "up", "--progress", "lines"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def up(run: Run, log: Path, crash_skip: list[str] | None = None) -> int:
    """Run the child to its end; its exit code (-SIGKILL when it killed itself at a transition)."""
    proc = _child(run, log, crash_skip)
    try:
        return proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def labels(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def hardware(run: Run) -> dict[str, bytes]:
    """Every file the hardware stages own, by path: none may change during the platform stages."""
    layout = run.layout
    files = [layout.secrets, layout.cluster_record, layout.kubeconfig, layout.talosconfig]
    files += sorted((layout.root / "nodes").glob("*.json")) + sorted((layout.root / "configs").glob("*"))
    return {str(p.relative_to(layout.root)): p.read_bytes() for p in files}


def _kinds(site: Site) -> dict[str, str]:
    """kind -> apiVersion of everything the platform stages may apply (the journal names kinds only)."""
    v1 = cozystack_major(site.cluster.cozystack_version) == 1
    objs: list[dict[str, Any]] = [d for docs in assets.load(site).values() for d in docs]
    objs += [manifests.system_namespace(), manifests.configmap(site), *manifests.metallb_objects(site)]
    objs += [*manifests.satellite_configurations(site), *manifests.storage_classes(site)]
    objs += manifests.tenant_objects(site, v1)
    return {o["kind"]: o["apiVersion"] for o in objs}


def platform_state(run: Run) -> dict[str, Any]:
    """What the platform stages leave: their records and journal, and every applied object as live."""
    layout = run.layout
    records = {}
    for name in _applicable():
        path = layout.platform_stage(name)
        if path.exists():
            records[name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
    journal = json.loads(layout.platform_journal.read_text())
    kinds, client, objects = _kinds(run.site), _client(run.host), {}
    for key in journal:
        kind, _, ref = key.partition(" ")
        ns, _, name = ref.rpartition("/")
        live = client.get(resource_class(kinds[kind], kind), name, namespace=ns or None).to_dict()
        meta = live.get("metadata") or {}
        objects[key] = {
            **{k: v for k, v in live.items() if k not in ("metadata", "status")},
            "metadata": {k: meta.get(k) for k in ("name", "namespace", "labels", "annotations")},
        }
    state = {"records": records, "journal": journal, "objects": objects}
    # Each site has its own stand-in on its own port: the endpoint is the one thing that must differ.
    return json.loads(json.dumps(state).replace(run.host.server, "https://<api-server>"))


def _applicable() -> list[str]:
    from provisioner.bundles import BUNDLES

    hardware = {s.name for s in HARDWARE_STAGES}
    return [s.name for s in stages_for(BUNDLES[BUNDLE]) if s.name not in hardware]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from provisioner.talos.secrets import generate_secrets

    return generate_secrets().to_yaml()


@dataclass
class Runs:
    reference: Run
    order: list[str]  # the uninterrupted run's transitions, in order
    chain: Run
    crashed: list[str]  # where each run of the chain was killed, in order
    reruns: list[list[str]]  # the transitions each run of the chain passed (the last one completed)
    before: dict[str, bytes]  # the chain site's hardware state before its first run
    after: dict[str, bytes]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, secrets: bytes) -> Iterator[Runs]:
    """The uninterrupted reference run and the chain of killed runs, side by side, each on its own
    API stand-in (the reference mostly waits on its simulator, so the two overlap well)."""
    root = tmp_path_factory.mktemp("platform-crash")
    with (
        running(root / "reference-kube", simulator=True) as ref_host,
        running(root / "chain-kube", simulator=True) as chain_host,
    ):
        ref = _write_site(root / "reference", ref_host, secrets)
        chain = _write_site(root / "chain", chain_host, secrets)
        before = hardware(chain)
        ref_log = root / "reference.log"
        reference = _child(ref, ref_log, None)
        try:
            crashed: list[str] = []
            reruns: list[list[str]] = []
            for i in range(4 * len(_applicable()) + 1):  # at most 4 transitions per stage
                log = root / f"chain{i}.log"
                rc = up(chain, log, crash_skip=crashed)
                reruns.append(labels(log))
                if rc == 0:
                    break
                assert rc == -signal.SIGKILL and reruns[-1], (rc, (chain.root / "up.out").read_text()[-3000:])
                crashed.append(reruns[-1][-1])
            else:
                pytest.fail(f"the chain never completed: killed at {crashed}")
            assert reference.wait(timeout=300) == 0, (ref.root / "up.out").read_text()[-3000:]
        finally:
            if reference.poll() is None:
                reference.kill()
                reference.wait()
        yield Runs(ref, labels(ref_log), chain, crashed, reruns, before, hardware(chain))


def test_every_platform_stage_is_a_transition(runs: Runs) -> None:
    order = runs.order
    assert [t.split(":")[0] for t in order if t.endswith(":done")] == _applicable()
    assert len(order) == len(set(order))
    assert {"contract:applied", "contract:journal", "helmreleases:record", "tenants:journal"} <= set(order)


def test_each_transition_was_a_crash_and_reruns_resume(runs: Runs) -> None:
    order = runs.order
    assert runs.crashed == order  # killed once at each transition of the uninterrupted run, in order
    for k, target in enumerate(runs.crashed):
        # Run k+1 starts where run k was killed: no stage recorded done by then runs again.
        done = {t.split(":")[0] for t in order[: k + 1] if t.endswith(":done")}
        rerun = runs.reruns[k + 1]
        assert not {label.split(":")[0] for label in rerun} & done, (target, rerun)
    assert runs.reruns[-1] == []  # the run after the last crash found every stage done


def test_the_final_state_equals_an_uninterrupted_run(runs: Runs) -> None:
    want, got = platform_state(runs.reference), platform_state(runs.chain)
    assert got["records"] == want["records"]
    assert got["journal"] == want["journal"]
    assert got["objects"].keys() == want["objects"].keys()
    for key, obj in want["objects"].items():
        assert got["objects"][key] == obj, key
    assert set(got["records"]) == set(_applicable())


def test_hardware_state_is_untouched(runs: Runs) -> None:
    assert runs.after == runs.before
    assert "secrets.yaml" in runs.before and "cluster.json" in runs.before


def test_a_further_rerun_writes_nothing(runs: Runs) -> None:
    run = runs.chain
    journal = run.layout.platform_journal.read_bytes()
    log = run.root / "further.log"
    assert up(run, log) == 0
    assert labels(log) == []  # no platform record or journal entry written
    assert run.layout.platform_journal.read_bytes() == journal
    # Every stage checked again against the API (not skipped on its record): zero writes.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["-i", str(run.inventory), "-o", "json", "platform", "install", "--redo"]) == 0
    text = out.getvalue()
    summary = json.loads(text[text.index("{") :])
    assert (summary["writes"], summary["written"]) == (0, [])
    assert summary["objects"] >= len(json.loads(journal))
    assert hardware(run) == runs.before
