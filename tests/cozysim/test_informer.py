"""The informer against the real server: a restarted watch resumes without a relist; after etcd
compacted the revision it resumes from, the 410 Gone makes it list again and the cache is whole; a
watch lagging behind a write the controller stored does not roll the cached object back."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import Callable

from lightkube import AsyncClient, KubeConfig

from provisioner.lab.kube import host
from provisioner.lab.kube.cozysim import kinds
from provisioner.lab.kube.cozysim.informer import Informer
from provisioner.lab.kube.cozysim.kinds import as_dict


def _etcd(endpoint: str, path: str, body: dict) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(), method="POST")
    with opener.open(req, timeout=10) as resp:
        return json.loads(resp.read())


def _compact_all(endpoint: str) -> None:
    revision = _etcd(endpoint, "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"]
    _etcd(endpoint, "/v3/kv/compaction", {"revision": revision, "physical": True})


def _configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _scenario(kubeconfig: str, etcd: str) -> None:
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager="test")
    changes = []
    informer = Informer(client, kinds.CONFIGMAP, lambda: changes.append(1), namespace="default")
    try:
        await client.create(kinds.CONFIGMAP.res.from_dict(_configmap("first")))
        task = asyncio.create_task(informer.run())
        await _until(lambda: informer.get("first", "default") is not None)
        assert informer.lists == 1
        task.cancel()

        await client.create(kinds.CONFIGMAP.res.from_dict(_configmap("while-away")))
        task = asyncio.create_task(informer.run())
        await _until(lambda: informer.get("while-away", "default") is not None)
        assert informer.lists == 1, "a restarted watch resumes from its resourceVersion, no relist"
        task.cancel()

        await client.delete(kinds.CONFIGMAP.res, "first", namespace="default")
        for n in range(5):
            await client.create(kinds.CONFIGMAP.res.from_dict(_configmap(f"later-{n}")))
        _compact_all(etcd)
        task = asyncio.create_task(informer.run())
        await _until(lambda: informer.lists == 2)
        await _until(lambda: informer.get("later-4", "default") is not None)
        names = {name for _, name in informer.items}
        assert {"while-away", *(f"later-{n}" for n in range(5))} <= names
        assert "first" not in names, "the relist drops what was deleted while the history was lost"
        task.cancel()
    finally:
        await client.close()


def test_watch_resume_and_relist_after_410() -> None:
    with host.running(simulator=False) as cluster:
        asyncio.run(_scenario(str(cluster.kubeconfig), cluster.etcd))


async def _lagging_watch(kubeconfig: str) -> None:
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager="test")
    seen: list[int] = []  # the cached version of "cm" at every change the informer reports
    informer: Informer

    def changed() -> None:
        cm = informer.get("cm", "default")
        if cm is not None:
            seen.append(int(cm["metadata"]["resourceVersion"]))

    informer = Informer(client, kinds.CONFIGMAP, changed, namespace="default")
    cm_kind = kinds.CONFIGMAP.res
    try:
        await client.create(kinds.CONFIGMAP.res.from_dict(_configmap("cm")))
        task = asyncio.create_task(informer.run())
        await _until(lambda: informer.get("cm", "default") is not None)
        task.cancel()
        # Two writes the watch has not delivered yet; the second one's result goes into the cache at
        # once, as the controller does with what it writes (Simulator.apply / apply_status).
        await client.patch(cm_kind, "cm", {"data": {"step": "1"}}, namespace="default")
        latest = as_dict(await client.patch(cm_kind, "cm", {"data": {"step": "2"}}, namespace="default"))
        informer.store(latest)
        newest = int(latest["metadata"]["resourceVersion"])
        seen.clear()
        task = asyncio.create_task(informer.run())  # resumes: delivers step 1, then step 2
        await _until(lambda: informer._rv is not None and int(informer._rv) >= newest)
        task.cancel()
        assert (informer.get("cm", "default") or {}).get("data") == {"step": "2"}
        assert all(rv >= newest for rv in seen), f"the cache went back to an older version: {seen}"
    finally:
        await client.close()


def test_a_lagging_watch_event_does_not_roll_back_a_stored_write() -> None:
    """A pass that decided from the rolled-back object wrote its status over the newer one."""
    with host.running(simulator=False) as cluster:
        asyncio.run(_lagging_watch(str(cluster.kubeconfig)))
