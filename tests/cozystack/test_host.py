"""The platform stages against the Kubernetes API stand-in (``provisioner/lab/kube``, host mode).

The test plays Flux for HelmRelease status (``standin_harness``), so waiting, root cause and
nudges run over a real API with a real watch; the Cozystack simulator is not needed here.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from platform_sites import HOSTED
from standin_harness import HR as HR_CLASS
from standin_harness import client, create_hr, install_hr_crd, request_counts, set_ready, writes

from provisioner.cli import main
from provisioner.cozystack.progress import PlatformProgress
from provisioner.cozystack.releases import expected_releases
from provisioner.cozystack.stages import ApiReady, HelmReleases, read_record
from provisioner.events import EventLog
from provisioner.inventory import load_inventory
from provisioner.lab.kube.host import KubeHost, running
from provisioner.layout import StateLayout
from provisioner.pipeline.base import StageFailed
from provisioner.pipeline.context import RunContext
from provisioner.state import StateStore


@pytest.fixture
def host(tmp_path: Path) -> Iterator[KubeHost]:
    with running(tmp_path / "kube") as h:
        yield h


def hosted_site(tmp_path: Path, kubeconfig: Path, bundle: str = "paas-hosted", **cluster: Any) -> Path:
    doc = json.loads(json.dumps(HOSTED))
    doc["cluster"].update({"bundle": bundle, "state_dir": str(tmp_path / "state"), **cluster})
    doc["hosted"]["kubeconfig"] = str(kubeconfig)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def context(site_path: Path, **options: Any) -> RunContext:
    site = load_inventory(site_path).site
    layout = StateLayout(site.state_dir)
    store = StateStore(site.state_dir)
    return RunContext(site, layout, store, EventLog(store.events_path), PlatformProgress("json"), options)


STAGES = ["--stage", "api-ready", "--stage", "contract", "--stage", "installer-assets"]


def test_contract_and_installer_then_a_rerun_writes_nothing(
    tmp_path: Path, host: KubeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    site = hosted_site(tmp_path, host.kubeconfig)
    assert main(["-i", str(site), "platform", "assets", "lab-import"]) == 0
    lock = yaml.safe_load((tmp_path / "cozystack-assets.lock.yaml").read_text())
    assert set(lock["assets"]["v0.41.11"]) == {"cozystack-installer.yaml"}
    request_counts(host.kubeconfig, reset=True)
    assert main(["-i", str(site), "-o", "json", "platform", "install", *STAGES]) == 0
    first = request_counts(host.kubeconfig)
    out = _last_json(capsys)
    assert out["writes"] == 5  # Namespace, ConfigMap, ServiceAccount, ClusterRoleBinding, Deployment
    assert writes(first) == 5, first
    assert sum(first.values()) / out["writes"] <= 1.5, first

    c = client(host.kubeconfig)
    from provisioner.cozystack.kube import resource_class

    dep = c.get(resource_class("apps/v1", "Deployment"), "cozystack", namespace="cozy-system")
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("203.0.113.5", "6443")
    cm = c.get(resource_class("v1", "ConfigMap"), "cozystack", namespace="cozy-system")
    assert cm.data["bundle-name"] == "paas-hosted" and cm.data["root-host"] == "h.example.com"

    request_counts(host.kubeconfig, reset=True)
    assert main(["-i", str(site), "-o", "json", "platform", "install", "--redo", *STAGES]) == 0
    assert _last_json(capsys)["writes"] == 0
    assert writes(request_counts(host.kubeconfig)) == 0

    # The inventory changes: a plain rerun runs the stale stage again and writes only what changed.
    doc = yaml.safe_load(site.read_text())
    doc["platform"] = {"expose_services": ["api", "dashboard", "vm-exportproxy"]}
    site.write_text(yaml.safe_dump(doc))
    assert main(["-i", str(site), "-o", "json", "platform", "install", *STAGES]) == 0
    assert _last_json(capsys)["written"] == ["ConfigMap cozy-system/cozystack"]
    cm = c.get(resource_class("v1", "ConfigMap"), "cozystack", namespace="cozy-system")
    assert cm.data["expose-services"] == "api,dashboard,vm-exportproxy"
    assert main(["-i", str(site), "-o", "json", "platform", "install", *STAGES]) == 0
    assert _last_json(capsys)["written"] == []


def _last_json(capsys: pytest.CaptureFixture[str]) -> Any:
    text = capsys.readouterr().out
    return json.loads(text[text.index("{") :])


def test_foreign_ca_kubeconfig_is_refused(
    tmp_path: Path, host: KubeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    with running(tmp_path / "other") as other:
        cfg = yaml.safe_load(host.kubeconfig.read_text())
        foreign = yaml.safe_load(other.kubeconfig.read_text())
        cfg["clusters"][0]["cluster"]["certificate-authority-data"] = foreign["clusters"][0]["cluster"][
            "certificate-authority-data"
        ]
        bad = tmp_path / "foreign.kubeconfig"
        bad.write_text(yaml.safe_dump(cfg))
        site = hosted_site(tmp_path, bad)
        assert main(["-i", str(site), "platform", "install", "--stage", "api-ready"]) == 2
        err = capsys.readouterr().err
        assert host.server in err and "not signed by the CA" in err and str(bad) in err


def test_unreachable_endpoint_is_named(tmp_path: Path, host: KubeHost) -> None:
    cfg = yaml.safe_load(host.kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # discard port: nothing listens
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(cfg))
    ctx = context(hosted_site(tmp_path, dead), api_attempts=2)
    from provisioner.errors import OperationError

    with pytest.raises(OperationError, match=r"https://127\.0\.0\.1:9 is unreachable"):
        asyncio.run(ApiReady().run(ctx))


def test_api_faults_are_absorbed(tmp_path: Path) -> None:
    with running(tmp_path / "kube", faults="seed=7,api500=0.05,reset=0.05") as h:
        site = hosted_site(tmp_path, h.kubeconfig)
        assert main(["-i", str(site), "platform", "assets", "lab-import"]) == 0
        for _ in range(3):  # enough requests that some faults hit
            assert main(["-i", str(site), "platform", "install", "--redo", *STAGES]) == 0
        counts = request_counts(h.kubeconfig)
        assert sum(counts.values()) > 20


class Flux(threading.Thread):
    """Marks every expected HelmRelease Ready, except ``broken`` (InstallFailed) which recovers
    only when nudged if ``heals``; its dependents report DependencyNotReady meanwhile."""

    def __init__(
        self, kubeconfig: Path, expected: dict[str, Any], broken: str, heals: bool, on_resume: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.c = client(kubeconfig)
        self.expected, self.broken, self.heals = expected, broken, heals
        self.on_resume = on_resume  # heal only after a suspend/resume (the spec changed twice)
        self.stop = threading.Event()
        self.nudged = False

    def blocked(self, key: str) -> bool:
        seen, todo = set(), [key]
        while todo:
            k = todo.pop()
            for d in self.expected[k].depends_on:
                if d == self.broken and not self.nudged:
                    return True
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return False

    def run(self) -> None:
        install_hr_crd(self.c)
        for key in self.expected:
            create_hr(self.c, key)
        while not self.stop.is_set():
            if self.heals and not self.nudged:
                ns, name = self.broken.split("/", 1)
                hr = self.c.get(HR_CLASS, name, namespace=ns)
                resumed = (hr.metadata.generation or 1) >= 3 and not (hr.spec or {}).get("suspend")
                requested = bool((hr.metadata.annotations or {}).get("reconcile.fluxcd.io/requestedAt"))
                self.nudged = resumed if self.on_resume else requested
            for key in self.expected:
                if key == self.broken and not self.nudged:
                    set_ready(self.c, key, "False", "InstallFailed", "Helm install failed: chart broken")
                elif self.blocked(key):
                    set_ready(
                        self.c, key, "False", "DependencyNotReady", f"dependency '{self.broken}' is not ready"
                    )
                else:
                    set_ready(self.c, key, "True", "InstallSucceeded", "Helm install succeeded")
            self.stop.wait(0.3)


NUDGE = {"nudge_after": 0.3, "nudge_interval": 1.0, "nudge_max": 2, "watch_idle": 2.0, "timeout": 60}


def test_stuck_release_is_nudged_and_the_install_completes(tmp_path: Path, host: KubeHost) -> None:
    ctx = context(hosted_site(tmp_path, host.kubeconfig, "distro-hosted"), **NUDGE)
    expected = expected_releases("distro-hosted")
    flux = Flux(host.kubeconfig, expected, "cozy-cert-manager/cert-manager-crds", heals=True)
    flux.start()
    try:
        asyncio.run(HelmReleases().run(ctx))
    finally:
        flux.stop.set()
        flux.join()
    assert flux.nudged
    rec = read_record(ctx.layout, "helmreleases")
    assert rec is not None and rec["bundle"] == "distro-hosted" and isinstance(rec["updated"], float)
    assert set(rec["releases"]) == set(expected)
    assert all(r["ready"] is True and r["blockedBy"] is None for r in rec["releases"].values())
    assert rec["releases"]["cozy-cert-manager/cert-manager"]["dependsOn"] == [
        "cozy-cert-manager/cert-manager-crds"
    ]
    assert HelmReleases().done(ctx.layout)
    from provisioner.report.platform import load as report_load  # the HTML report reads this record

    view = report_load(ctx.layout.platform_stage("helmreleases"), "distro-hosted")
    assert view.from_record and {r.state for r in view.releases.values()} == {"ready"}
    nudges = [line for line in ctx.progress.lines if line[1] == "nudge"]
    assert nudges and "cert-manager-crds (reconcile) after InstallFailed" in nudges[0][2]


def test_permanent_failure_names_the_root_and_its_blocked_dependents(tmp_path: Path, host: KubeHost) -> None:
    ctx = context(hosted_site(tmp_path, host.kubeconfig, "distro-hosted"), **NUDGE)
    flux = Flux(
        host.kubeconfig,
        expected_releases("distro-hosted"),
        "cozy-cert-manager/cert-manager-crds",
        heals=False,
    )
    flux.start()
    started = time.monotonic()
    try:
        with pytest.raises(StageFailed) as exc:
            asyncio.run(HelmReleases().run(ctx))
    finally:
        flux.stop.set()
        flux.join()
    text = str(exc.value)
    assert time.monotonic() - started < 30  # gave up after the bounded nudges, not the time box
    assert "still failing after 2 nudges: cozy-cert-manager/cert-manager-crds" in text
    assert "cozy-cert-manager/cert-manager-crds: InstallFailed: Helm install failed: chart broken" in text
    assert "blocks 2: cozy-cert-manager/cert-manager, cozy-system/lineage-controller-webhook" in text
    rec = read_record(ctx.layout, "helmreleases")
    assert (
        rec["releases"]["cozy-system/lineage-controller-webhook"]["blockedBy"]
        == "cozy-cert-manager/cert-manager-crds"
    )
    assert not HelmReleases().done(ctx.layout)
    from provisioner.report.platform import load as report_load

    view = report_load(ctx.layout.platform_stage("helmreleases"), "distro-hosted")
    assert view.releases["cozy-cert-manager/cert-manager-crds"].state == "failed"
    assert view.releases["cozy-system/lineage-controller-webhook"].state == "blocked"


def test_api_ready_names_missing_and_mismatched_nodes(tmp_path: Path, host: KubeHost) -> None:
    from lightkube import codecs
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType
    from platform_sites import FULL

    doc = json.loads(json.dumps(FULL))
    doc["cluster"]["state_dir"] = str(tmp_path / "state")
    for node in doc["nodes"]:
        node["bmc"]["password"] = "env:UNUSED"
    site_path = tmp_path / "site.yaml"
    site_path.write_text(yaml.safe_dump(doc))
    c = client(host.kubeconfig)
    for name, ip in (("n11", "10.9.0.11"), ("n12", "10.9.0.99"), ("n13", "10.9.0.13")):  # n21 never registers
        c.apply(
            codecs.from_dict({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}), force=True
        )
        c.patch(
            Node.Status,
            name,
            {"status": {"addresses": [{"type": "InternalIP", "address": ip}]}},
            patch_type=PatchType.MERGE,
        )
    ctx = context(site_path, timeout=3)
    ctx.kubeconfig = host.kubeconfig
    with pytest.raises(StageFailed) as exc:
        asyncio.run(ApiReady().run(ctx))
    assert str(exc.value) == (
        "Node n12 has InternalIP 10.9.0.99, inventory 10.9.0.12; "
        "node n21 (10.9.0.21) is not registered as a Kubernetes Node"
    )
    assert not ApiReady().done(ctx.layout)


def test_a_release_that_needs_suspend_resume_gets_it(tmp_path: Path, host: KubeHost) -> None:
    ctx = context(hosted_site(tmp_path, host.kubeconfig, "distro-hosted"), **{**NUDGE, "nudge_max": 3})
    broken = "cozy-cert-manager/cert-manager-crds"
    flux = Flux(host.kubeconfig, expected_releases("distro-hosted"), broken, heals=True, on_resume=True)
    flux.start()
    try:
        asyncio.run(HelmReleases().run(ctx))
    finally:
        flux.stop.set()
        flux.join()
    actions = [line[2].split("(")[1].split(")")[0] for line in ctx.progress.lines if line[1] == "nudge"]
    assert actions == ["reconcile", "suspend-resume"]
    hr = client(host.kubeconfig).get(HR_CLASS, "cert-manager-crds", namespace="cozy-cert-manager")
    assert hr.spec.get("suspend") is False  # resumed, not left suspended


async def _forward(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        dst.close()


def test_api_ready_waits_for_an_api_that_comes_up_after_the_cluster_forms(
    tmp_path: Path, host: KubeHost
) -> None:
    """A just-formed cluster's API answers late (TCG): full-bundle api-ready keeps polling until the
    deadline instead of failing on the first refused connection; past the deadline it names the endpoint."""
    import socket

    from provisioner.cozystack.kube import Kube
    from provisioner.cozystack.stages import wait_for_api
    from provisioner.errors import OperationError

    with socket.socket() as s:  # a free loopback port where nothing listens yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = yaml.safe_load(host.kubeconfig.read_text())
    upstream = cfg["clusters"][0]["cluster"]["server"]
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    late = tmp_path / "late.kubeconfig"
    late.write_text(yaml.safe_dump(cfg))
    target_host, target_port = upstream.removeprefix("https://").rsplit(":", 1)

    async def scenario() -> float:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(target_host, int(target_port))
            await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))

        kube = Kube(late, attempts=1)
        try:
            with pytest.raises(OperationError, match=rf"https://127\.0\.0\.1:{port} is unreachable"):
                await wait_for_api(kube, time.monotonic() + 1.0, interval=0.2)

            async def open_later() -> asyncio.Server:
                await asyncio.sleep(3.0)
                return await asyncio.start_server(relay, "127.0.0.1", port)

            opener = asyncio.create_task(open_later())
            start = time.monotonic()
            await wait_for_api(kube, start + 60, interval=0.2)
            waited = time.monotonic() - start
            (await opener).close()
            return waited
        finally:
            await kube.close()

    assert asyncio.run(scenario()) >= 2.5


def test_a_watch_answered_5xx_ends_for_a_rewatch_and_4xx_is_named(tmp_path: Path, host: KubeHost) -> None:
    """lightkube raises httpx's HTTPStatusError when the watch request itself gets an error answer
    (seen in the lab under TCG): a 5xx ends the watch (the caller re-lists), a 4xx names the kind."""
    import httpx2 as httpx

    from provisioner.cozystack.kube import ApiCallError, Kube

    def answered(code: int) -> Any:
        async def watch(*_: Any, **__: Any) -> Any:
            request = httpx.Request("GET", host.server + "/apis/helm.toolkit.fluxcd.io/v2/helmreleases")
            raise httpx.HTTPStatusError(
                "error", request=request, response=httpx.Response(code, request=request)
            )
            yield  # an async generator, like lightkube's

        return watch

    async def scenario() -> None:
        kube = Kube(host.kubeconfig, attempts=1)
        try:
            kube.client.watch = answered(500)  # type: ignore[method-assign]
            assert [e async for e in kube.watch("v1", "ConfigMap")] == []
            kube.client.watch = answered(403)  # type: ignore[method-assign]
            with pytest.raises(ApiCallError, match=r"watch ConfigMap at .*HTTP 403"):
                _ = [e async for e in kube.watch("v1", "ConfigMap")]
        finally:
            await kube.close()

    asyncio.run(scenario())
