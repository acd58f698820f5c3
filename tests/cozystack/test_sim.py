"""End to end against the host API stand-in and the Cozystack simulator (``lab kube`` host mode):
each bundle installs to Ready and a rerun writes nothing; a stuck release is nudged; a failed one
exits 1 naming it and what it blocks; kill -9 mid-install, then the rerun completes; the seed's
tenant example (tenant-foo with monitoring, tenant-foo-bar with etcd) is applied and verified."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from standin_harness import client

from provisioner.cli import platform as platform_cli
from provisioner.cli.context import App
from provisioner.cozystack.kube import resource_class
from provisioner.cozystack.releases import expected_releases
from provisioner.lab.kube.host import KubeHost, running

REPO = Path(__file__).parents[2]
PROVISIONER = str(Path(sys.executable).parent / "provisioner")
SEED_TENANTS = {"root": {"children": {"foo": {"monitoring": True, "children": {"bar": {"etcd": True}}}}}}


def write_site(tmp: Path, host: KubeHost, bundle: str, version: str = "v0.41.11") -> Path:
    if bundle.endswith("-full"):
        doc = yaml.safe_load((REPO / "inventory/examples/lab.yaml").read_text())
        for node in doc["nodes"]:
            node["bmc"]["password"] = "env:UNUSED"
            node["bmc"].pop("ca_file", None)
        if bundle != "paas-full":
            doc.pop("tenants")
        (tmp / "state").mkdir(parents=True, exist_ok=True)
        (tmp / "state" / "kubeconfig").write_bytes(host.kubeconfig.read_bytes())
        register_nodes(host, doc["nodes"])
    else:
        doc = {
            "cluster": {"name": "sim", "api_server_endpoint": "https://127.0.0.1:6443"},
            "hosted": {"kubeconfig": str(host.kubeconfig)},
        }
        if bundle == "paas-hosted":
            doc["cluster"]["root_host"] = "sim.cozy.test"
            doc["tenants"] = SEED_TENANTS
    doc["cluster"].update({"bundle": bundle, "cozystack_version": version, "state_dir": str(tmp / "state")})
    doc["cluster"]["timeouts"] = {"platform": 240}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def register_nodes(host: KubeHost, nodes: list[dict[str, Any]]) -> None:
    """Play the kubelets: Nodes with the inventory's names and InternalIPs, and their disks."""
    from lightkube import codecs
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    c = client(host.kubeconfig)
    for node in nodes:
        meta = {
            "name": node["name"],
            "labels": {"kubernetes.io/hostname": node["name"]},
            "annotations": {"lab.provisioner/disks": ",".join(node.get("data_disks", []))},
        }
        c.apply(codecs.from_dict({"apiVersion": "v1", "kind": "Node", "metadata": meta}), force=True)
        status = {"status": {"addresses": [{"type": "InternalIP", "address": node["ip"]}]}}
        c.patch(Node.Status, node["name"], status, patch_type=PatchType.MERGE)


def install(site: Path, *, redo: bool = False, **options: Any) -> tuple[int, dict[str, Any], str]:
    """``platform install`` in-process (options reach the stages): exit code, JSON summary, stderr."""
    out, err = io.StringIO(), io.StringIO()
    app = App(inventory_path=site, output="json")
    import click

    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        click.Context(platform_cli.platform, obj=app),
    ):
        rc = platform_cli.run_stages(app, (), redo, {"timeout": None, **options})
    text = out.getvalue()
    return rc, (json.loads(text[text.index("{") :]) if "{" in text else {}), err.getvalue()


def lab_import(site: Path) -> None:
    from provisioner.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["-i", str(site), "platform", "assets", "lab-import"]) == 0


@pytest.fixture
def sim(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[KubeHost]:
    kwargs: dict[str, Any] = getattr(request, "param", {})
    with running(
        tmp_path / "kube", simulator=True, delay=kwargs.get("delay", 0.0), faults=kwargs.get("faults")
    ) as h:
        yield h


def live(host: KubeHost, api_version: str, kind: str) -> list[Any]:
    from lightkube.core.resource import NamespacedResource

    cls = resource_class(api_version, kind)
    ns = "*" if issubclass(cls, NamespacedResource) else None
    return list(client(host.kubeconfig).list(cls, namespace=ns))


@pytest.mark.parametrize(
    ("bundle", "version"),
    [(b, "v0.41.11") for b in ("paas-full", "paas-hosted", "distro-full", "distro-hosted")]
    + [("paas-full", "v1.6.2"), ("paas-hosted", "v1.6.2")],
)
def test_bundle_installs_to_ready_and_a_rerun_writes_nothing(
    tmp_path: Path, sim: KubeHost, bundle: str, version: str
) -> None:
    site = write_site(tmp_path, sim, bundle, version)
    lab_import(site)
    rc, first, err = install(site)
    assert rc == 0, err
    assert first["writes"] >= 5 and first["apply_requests"] / first["objects"] <= 1.5
    rec = json.loads((tmp_path / "state/platform/helmreleases.json").read_text())
    assert set(rec["releases"]) == set(expected_releases(bundle)) and all(
        r["ready"] is True for r in rec["releases"].values()
    )
    rc, second, err = install(site, redo=True)
    assert (rc, second["writes"], second["written"]) == (0, 0, []), err
    if version.startswith("v1."):
        package = resource_class("cozystack.io/v1alpha1", "Package")
        pkg = client(sim.kubeconfig).get(package, "cozystack.cozystack-platform")
        assert pkg.spec["variant"] == {"paas-full": "isp-full", "paas-hosted": "isp-hosted"}[bundle]
    if bundle in ("paas-full", "distro-full"):
        classes = {sc.metadata.name: sc for sc in live(sim, "storage.k8s.io/v1", "StorageClass")}
        assert classes["local"].metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"
        assert classes["replicated"].volumeBindingMode == "Immediate"
        sats = live(sim, "piraeus.io/v1", "LinstorSatellite")
        assert sorted(s.metadata.name for s in sats) == ["cp1", "cp2", "cp3", "w1"]
        pools = [p.get("name") for s in sats for p in s.spec.get("storagePools", [])]
        assert pools == ["data"] * 4
        assert [p.metadata.name for p in live(sim, "metallb.io/v1beta1", "IPAddressPool")] == ["cozystack"]
    if bundle == "paas-full":
        kv = live(sim, "kubevirt.io/v1", "KubeVirt")
        assert [k.status.get("phase") for k in kv] == ["Deployed"]
        assert sorted(t.metadata.namespace + "/" + t.metadata.name for t in live(sim, *TENANT)) == [
            "tenant-demo/dev",
            "tenant-root/demo",
            "tenant-root/root",
        ]
    if bundle == "paas-hosted":  # the seed's example: tenant-foo (monitoring), tenant-foo-bar (etcd)
        from lightkube.resources.core_v1 import Namespace

        bar = client(sim.kubeconfig).get(Namespace, "tenant-foo-bar").metadata.labels
        assert bar["namespace.cozystack.io/etcd"] == "tenant-foo-bar"
        assert bar["namespace.cozystack.io/monitoring"] == "tenant-foo"
        assert bar["namespace.cozystack.io/ingress"] == "tenant-root"
        assert bar["namespace.cozystack.io/host"] == "bar.foo.sim.cozy.test"


TENANT = ("apps.cozystack.io/v1alpha1", "Tenant")
FAST_NUDGE = {"nudge_after": 0.5, "nudge_interval": 2.0, "nudge_max": 2, "watch_idle": 3.0}


@pytest.mark.parametrize("sim", [{"faults": "stuck=cozy-cert-manager/cert-manager"}], indirect=True)
def test_a_stuck_release_is_nudged_and_the_install_completes(tmp_path: Path, sim: KubeHost) -> None:
    site = write_site(tmp_path, sim, "distro-hosted")
    lab_import(site)
    rc, _, err = install(site, **FAST_NUDGE)
    assert rc == 0, err
    assert "nudged cozy-cert-manager/cert-manager (reconcile) after RetriesExceeded" in err
    events = [json.loads(x) for x in (tmp_path / "state/events.jsonl").read_text().splitlines()]
    assert any(e.get("kind") == "platform.nudge" for e in events)


@pytest.mark.parametrize("sim", [{"faults": "fail=cozy-cert-manager/cert-manager"}], indirect=True)
def test_a_failed_release_exits_1_naming_it_and_its_blocked_dependents(tmp_path: Path, sim: KubeHost) -> None:
    site = write_site(tmp_path, sim, "distro-hosted")
    lab_import(site)
    rc, _, err = install(site, **FAST_NUDGE)
    assert rc == 1
    assert "platform stage helmreleases failed" in err
    assert "cozy-cert-manager/cert-manager: RetriesExceeded" in err
    assert "blocks 1: cozy-system/lineage-controller-webhook" in err
    status = subprocess.run(
        [PROVISIONER, "-i", str(site), "-o", "json", "platform", "status"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    rows = {r["stage"]: r for r in json.loads(status.stdout)}
    assert rows["helmreleases"]["failing"] == ["cozy-cert-manager/cert-manager"]


@pytest.mark.parametrize("sim", [{"delay": 0.3}], indirect=True)
def test_kill_9_mid_install_then_the_rerun_completes(tmp_path: Path, sim: KubeHost) -> None:
    site = write_site(tmp_path, sim, "paas-hosted")
    lab_import(site)
    record = tmp_path / "state/platform/helmreleases.json"
    proc = subprocess.Popen(
        [PROVISIONER, "-i", str(site), "platform", "install"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists(), "the install never reached the helmreleases stage"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    rec = json.loads(record.read_text())
    assert not all(r["ready"] is True for r in rec["releases"].values())  # killed mid-wait
    rc, _, err = install(site)
    assert rc == 0, err
    assert len([c for c in live(sim, "v1", "ConfigMap") if c.metadata.name == "cozystack"]) == 1
    assert len(live(sim, *TENANT)) == 3  # root, foo, bar: no duplicates


@pytest.mark.parametrize("bundle", ["paas-hosted", "distro-hosted"])
def test_hosted_bundles_end_to_end_through_up(tmp_path: Path, sim: KubeHost, bundle: str) -> None:
    from provisioner.cli import main

    site = write_site(tmp_path, sim, bundle)
    lab_import(site)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["-i", str(site), "-o", "json", "up"])
    assert rc == 0, f"{err.getvalue()[-3000:]}\n{out.getvalue()[-3000:]}"
    result = json.loads(out.getvalue()[out.getvalue().index("{") :])
    stages = {s["name"]: s["status"] for s in result["stages"]}
    want = ["api-ready", "contract", "installer-assets", "helmreleases"] + (
        ["tenants"] if bundle == "paas-hosted" else []
    )
    assert stages == dict.fromkeys(want, "done")
    assert result["stage_error"] is None and result["nodes"] == []
    for name in want:
        assert json.loads((tmp_path / "state/platform" / f"{name}.json").read_text())
    journal = (tmp_path / "state/platform/applied.journal").read_text()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["-i", str(site), "up"]) == 0  # every stage recorded: nothing to do
    assert (tmp_path / "state/platform/applied.journal").read_text() == journal


@pytest.mark.parametrize("sim", [{"faults": "seed=11,api500=0.05,reset=0.05"}], indirect=True)
def test_api_faults_at_5_percent_are_absorbed(tmp_path: Path, sim: KubeHost) -> None:
    site = write_site(tmp_path, sim, "paas-hosted")
    lab_import(site)
    rc, summary, err = install(site)
    assert rc == 0, err
    assert summary["requests"]["apply"] >= 8  # namespace, ConfigMap, 3 installer objects, 3 tenants


def test_a_node_whose_disk_is_missing_is_named(tmp_path: Path, sim: KubeHost) -> None:
    site = write_site(tmp_path, sim, "distro-full")
    doc = yaml.safe_load(site.read_text())
    w1 = next(n for n in doc["nodes"] if n["name"] == "w1")
    register_nodes(sim, [{**w1, "data_disks": ["/dev/vdc"]}])  # w1 reports another disk than the inventory's
    lab_import(site)
    rc, _, err = install(site, storage_timeout=20)  # the healthy nodes' pools come up well within it
    assert rc == 1
    assert (
        "platform stage storage failed: storage pool data is not ready on: node w1 (data_disks /dev/vdb)"
        in err
    )
    assert "cp1" not in err.split("storage failed:")[1]


def test_tenants_not_in_the_inventory_are_reported_then_pruned(tmp_path: Path, sim: KubeHost) -> None:
    from lightkube import codecs

    from provisioner.cli import main

    site = write_site(tmp_path, sim, "paas-hosted")
    lab_import(site)
    assert install(site)[0] == 0
    stray = {
        "apiVersion": TENANT[0],
        "kind": "Tenant",
        "metadata": {"name": "stray", "namespace": "tenant-root"},
        "spec": {"etcd": False},
    }
    client(sim.kubeconfig).apply(codecs.from_dict(stray), force=True)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["-i", str(site), "tenants", "apply"]) == 0
    assert "Tenant tenant-root/stray is not in the inventory (left alone; --prune deletes)" in err.getvalue()
    assert "tenant-root/stray" in [f"{t.metadata.namespace}/{t.metadata.name}" for t in live(sim, *TENANT)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["-i", str(site), "tenants", "apply", "--prune"]) == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(t.metadata.name == "stray" for t in live(sim, *TENANT)):
        time.sleep(0.5)
    assert sorted(t.metadata.name for t in live(sim, *TENANT)) == ["bar", "foo", "root"]


def test_external_ips_instead_of_metallb(tmp_path: Path, sim: KubeHost) -> None:
    from lightkube.resources.core_v1 import Service

    site = write_site(tmp_path, sim, "paas-full")
    doc = yaml.safe_load(site.read_text())
    del doc["networks"]["metallb"]
    doc["platform"] = {"expose_external_ips": ["192.168.77.11", "192.168.77.12"]}
    site.write_text(yaml.safe_dump(doc))
    lab_import(site)
    rc, summary, err = install(site)
    assert rc == 0, err
    rec = json.loads((tmp_path / "state/platform/helmreleases.json").read_text())
    assert "cozy-metallb/metallb" not in rec["releases"]  # bundle-disable: metallb, added for external IPs
    svc = client(sim.kubeconfig).get(Service, "root-ingress-controller", namespace="tenant-root")
    assert sorted(svc.spec.externalIPs) == ["192.168.77.11", "192.168.77.12"]
    assert not any(w.startswith("IPAddressPool") for w in summary["written"])


@pytest.mark.parametrize("sim", [{"faults": "seed=3,stall-watch=0.7", "delay": 0.2}], indirect=True)
def test_a_stalled_watch_is_replaced(tmp_path: Path, sim: KubeHost) -> None:
    site = write_site(tmp_path, sim, "distro-hosted")
    lab_import(site)
    started = time.monotonic()
    rc, summary, err = install(site, watch_idle=2.0)
    assert rc == 0, err
    assert summary["requests"]["watch"] >= 1
    assert time.monotonic() - started < 60
