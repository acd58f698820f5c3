"""Each bundle's HelmReleases go Ready in dependency order against the real API server stand-in."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cozysim_lab import PAAS, HTTPError, Lab, condition, is_ready, lab_cluster, wait_for

from provisioner.lab.kube.cozysim import kinds, upstream

# From provisioner/cozystack/upstream/bundles/README.md: releases labelled cozystack.io/system-app=true
# after a default install.
SYSTEM_APPS = {"paas-full": 76, "paas-hosted": 51, "distro-full": 41, "distro-hosted": 6}


def _watch_until_ready(lab: Lab, since: str, expected: int, timeout: float = 120.0) -> dict[str, Any]:
    """Replay HelmRelease events from resourceVersion ``since``; per release: first Ready rv, waited?

    A dropped watch connection (the stand-in closes idle keep-alive connections) is resumed from the
    last resourceVersion seen, so no event is lost or counted twice.
    """
    ready_at: dict[str, int] = {}
    waited: set[str] = set()
    last: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            for _, obj in lab.client.watch(
                kinds.HELMRELEASE.res, namespace="*", resource_version=since, server_timeout=5
            ):
                hr = kinds.as_dict(obj)
                since = hr["metadata"]["resourceVersion"]
                key = f"{hr['metadata']['namespace']}/{hr['metadata']['name']}"
                last[key] = hr
                if condition(hr).get("reason") == "DependencyNotReady":
                    waited.add(key)
                if is_ready(hr) and key not in ready_at:
                    ready_at[key] = int(since)
                labels = [v["metadata"].get("labels", {}) for v in last.values()]
                system = [x for x in labels if x.get("cozystack.io/system-app")]
                if len(system) >= expected and all(k in ready_at for k in last):
                    return {"ready_at": ready_at, "waited": waited, "last": last}
                if time.monotonic() > deadline:
                    break
        except HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not all HelmReleases Ready after {timeout}s: {sorted(set(last) - set(ready_at))}")


@pytest.mark.parametrize("bundle", upstream.BUNDLES)
def test_bundle_releases_go_ready_in_dependency_order(bundle: str) -> None:
    with lab_cluster(delay=0.05) as lab:
        ns = lab.apply(
            kinds.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cozy-system"}}
        )
        since = ns["metadata"]["resourceVersion"]
        lab.install_v0({"bundle-name": bundle, **PAAS})
        wait_for("the HelmRelease CRD to be served", lambda: lab.list(kinds.HELMRELEASE) or None, lab, 30)
        seen = _watch_until_ready(lab, since, SYSTEM_APPS[bundle])
        last, ready_at = seen["last"], seen["ready_at"]
        system = {
            k for k, v in last.items() if v["metadata"]["labels"].get("cozystack.io/system-app") == "true"
        }
        assert len(system) == SYSTEM_APPS[bundle]
        assert "tenant-root/tenant-root" in last

        entries = {e.name: e for e in upstream.bundle(bundle)}
        for key in system:
            name = key.split("/", 1)[1]
            want = [{"name": d, "namespace": entries[d].namespace} for d in entries[name].depends_on]
            assert last[key]["spec"]["dependsOn"] == want, key
        for key, hr in last.items():
            for dep in hr["spec"].get("dependsOn") or ():
                dep_key = f"{dep['namespace']}/{dep['name']}"
                assert ready_at[key] > ready_at[dep_key], f"{key} was Ready before its dependency {dep_key}"
            assert condition(hr)["reason"] in ("InstallSucceeded", "UpgradeSucceeded")
            assert hr["status"]["observedGeneration"] == hr["metadata"]["generation"]
        assert seen["waited"], "some release must have waited on a dependency (DependencyNotReady)"
        deepest = max(system, key=lambda k: len(last[k]["spec"]["dependsOn"]))
        assert deepest in seen["waited"]

        installer = lab.get(kinds.DEPLOYMENT, "cozystack", "cozy-system")
        assert condition(installer, "Available")["status"] == "True"


def test_bundle_disable_removes_a_rendered_release_and_its_edges() -> None:
    with lab_cluster(delay=0.02) as lab:
        lab.install_v0({"bundle-name": "distro-hosted"})
        wait_for(
            "metrics-server", lambda: lab.get(kinds.HELMRELEASE, "metrics-server", "cozy-monitoring"), lab
        )
        lab.merge(
            kinds.CONFIGMAP,
            "cozystack",
            {"data": {"bundle-disable": "metrics-server", "bundle-enable": "telepresence"}},
            "cozy-system",
        )
        wait_for(
            "metrics-server to be deleted",
            lambda: lab.get(kinds.HELMRELEASE, "metrics-server", "cozy-monitoring") is None,
            lab,
        )
        telepresence = wait_for(
            "telepresence to be rendered",
            lambda: lab.get(kinds.HELMRELEASE, "telepresence", "cozy-telepresence"),
            lab,
        )
        assert telepresence["spec"]["releaseName"] == "traffic-manager"
