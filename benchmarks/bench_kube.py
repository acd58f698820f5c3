"""Benchmark of the Kubernetes API server stand-in on the host (real etcd, loopback, mutual TLS).

Figures: request rates for get, list (100 ConfigMaps), server-side apply, and watch fan-out (events
delivered per second to 50 concurrent watchers), and the size and time of a list of 500
HelmReleases. Clients run in this process, on the same 2 cores as the server and etcd, so their CPU
counts against the figures: raw httpx (the HTTP library lightkube uses) for the request rates,
lightkube's async client for watches and setup.

Figure judged: server-side apply requests per second, target >= 300 (the platform stage applies
hundreds of objects; a real kube-apiserver does thousands). Exits 1 when missed.

Run: ``make bench-kube`` (or ``.venv/bin/python benchmarks/bench_kube.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace

from provisioner.lab.kube.host import running

TARGET_SSA_PER_S = 300.0
WORKERS = 16
SSA_REQUESTS = 1500
GETS = 1500
LISTS = 200
WATCHERS = 50
WATCH_OBJECTS = 100
HELMRELEASES = 500

HR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "helmreleases.helm.toolkit.fluxcd.io"},
    "spec": {
        "group": "helm.toolkit.fluxcd.io",
        "scope": "Namespaced",
        "names": {
            "plural": "helmreleases",
            "singular": "helmrelease",
            "kind": "HelmRelease",
            "shortNames": ["hr"],
        },
        "versions": [
            {
                "name": "v2",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def helmrelease(n: int) -> dict[str, Any]:
    """A HelmRelease shaped like Cozystack's (chart ref, dependsOn, values, install/upgrade remediation)."""
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {
            "name": f"release-{n:03d}",
            "namespace": "bench-hr",
            "labels": {"cozystack.io/repository": "system", "cozystack.io/system-app": "true"},
        },
        "spec": {
            "interval": "5m",
            "releaseName": f"release-{n:03d}",
            "chart": {
                "spec": {
                    "chart": f"cozy-chart-{n:03d}",
                    "version": ">= 0.0.0-0",
                    "sourceRef": {
                        "kind": "HelmRepository",
                        "name": "cozystack-system",
                        "namespace": "cozy-public",
                    },
                }
            },
            "dependsOn": [{"name": f"release-{max(n - 1, 0):03d}", "namespace": "bench-hr"}],
            "install": {"crds": "CreateReplace", "remediation": {"retries": -1}},
            "upgrade": {"crds": "CreateReplace", "remediation": {"retries": -1}},
            "values": {"replicas": 2, "image": {"repository": "ghcr.io/cozystack/x", "tag": "v0.41.11"}},
        },
        "status": {},
    }


async def rate(label: str, count: int, make: Any) -> float:
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            await make(queue.pop())

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    per_s = count / (time.perf_counter() - t)
    print(f"  {label}: {per_s:.0f} requests/s ({count} requests, {WORKERS} concurrent clients)")
    return per_s


async def bench(kubeconfig: str) -> float:
    client = AsyncClient(KubeConfig.from_file(kubeconfig), field_manager="bench")
    await client.create(Namespace(metadata=ObjectMeta(name="bench")))
    for i in range(300):
        await client.create(
            ConfigMap(metadata=ObjectMeta(name=f"cm-{i}", namespace="bench"), data={"i": str(i)})
        )

    http = raw_client(kubeconfig)
    base = "/api/v1/namespaces/bench/configmaps"

    async def ssa_one(i: int) -> None:
        body = json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"ssa-{i % 200}"},
                "data": {"n": str(i)},
            }
        )
        resp = await http.patch(
            f"{base}/ssa-{i % 200}?fieldManager=bench",
            content=body,
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        assert resp.status_code in (200, 201), resp.text

    async def get_one(i: int) -> None:
        assert (await http.get(f"{base}/cm-{i % 300}")).status_code == 200

    async def list_one(i: int) -> None:
        assert len((await http.get(base)).json()["items"]) == 500

    ssa = await rate("server-side apply (ConfigMap, 200 names)", SSA_REQUESTS, ssa_one)
    await rate("get (ConfigMap)", GETS, get_one)
    await rate("list (500 ConfigMaps)", LISTS, list_one)

    # watch fan-out
    await client.create(Namespace(metadata=ObjectMeta(name="bench-watch")))
    start_rv = (await client.get(Namespace, "bench-watch")).metadata.resourceVersion
    delivered = 0
    done = asyncio.Event()

    async def watcher() -> None:
        nonlocal delivered
        seen = 0
        async for _ in client.watch(ConfigMap, namespace="bench-watch", resource_version=start_rv):
            seen += 1
            delivered += 1
            if delivered == WATCHERS * WATCH_OBJECTS:
                done.set()
            if seen == WATCH_OBJECTS:
                return

    tasks = [asyncio.create_task(watcher()) for _ in range(WATCHERS)]
    await asyncio.sleep(1.0)
    t = time.perf_counter()
    for i in range(WATCH_OBJECTS):
        await client.create(ConfigMap(metadata=ObjectMeta(name=f"w-{i}", namespace="bench-watch"), data={}))
    await asyncio.wait_for(done.wait(), 120)
    fan = delivered / (time.perf_counter() - t)
    print(f"  watch fan-out: {fan:.0f} events/s delivered ({WATCHERS} watchers x {WATCH_OBJECTS} objects)")
    for task in tasks:
        task.cancel()

    # 500 HelmReleases
    await client.create(Namespace(metadata=ObjectMeta(name="bench-hr")))
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    await client.create(CustomResourceDefinition.from_dict(HR_CRD))  # type: ignore[attr-defined]
    hr = create_namespaced_resource("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases")
    await rate("create (HelmRelease)", HELMRELEASES, lambda i: client.create(hr.from_dict(helmrelease(i))))  # type: ignore[attr-defined]
    best, size = float("inf"), 0
    for _ in range(3):
        t = time.perf_counter()
        resp = await http.get("/apis/helm.toolkit.fluxcd.io/v2/namespaces/bench-hr/helmreleases")
        best = min(best, time.perf_counter() - t)
        size = len(resp.content)
        assert resp.status_code == 200 and len(resp.json()["items"]) == HELMRELEASES
    await http.aclose()
    print(f"  list of {HELMRELEASES} HelmReleases: {size / 1024:.0f} KiB in {best * 1000:.0f} ms")
    await client.close()
    return ssa


def raw_client(kubeconfig: str) -> httpx.AsyncClient:
    """An httpx client with the kubeconfig's server, CA and client certificate."""
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    user, cluster = doc["users"][0]["user"], doc["clusters"][0]["cluster"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-kube-"))
    for name, key in (("ca.crt", None), ("c.crt", "client-certificate-data"), ("c.key", "client-key-data")):
        data = cluster["certificate-authority-data"] if key is None else user[key]
        (tmp / name).write_bytes(base64.b64decode(data))
        os.chmod(tmp / name, 0o600)
    ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    ctx.load_cert_chain(str(tmp / "c.crt"), str(tmp / "c.key"))
    return httpx.AsyncClient(
        base_url=cluster["server"],
        verify=ctx,
        timeout=30,
        trust_env=False,
        limits=httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS),
    )


def main() -> int:
    with running() as host:
        ssa = asyncio.run(bench(str(host.kubeconfig)))
    print(f"bench-kube: {ssa:.0f} server-side apply requests/s (target >= {TARGET_SSA_PER_S:g})")
    return 0 if ssa >= TARGET_SSA_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
