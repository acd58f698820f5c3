"""A host cluster (real etcd + the API server stand-in + the simulator process) and helpers to drive it.

Tests talk to it only through lightkube, like the product does; the simulator runs as its own process
(``python -m provisioner.lab.kube.cozysim``) started by ``provisioner.lab.kube.host.running``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.core import exceptions as lightkube_exceptions
from lightkube.types import PatchType

from provisioner.lab.kube import host
from provisioner.lab.kube.cozysim import kinds
from provisioner.lab.kube.cozysim.kinds import Kind

T = TypeVar("T")
PAAS = {"root-host": "example.org", "api-server-endpoint": "https://127.0.0.1:6443"}
INSTALLER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "cozystack", "namespace": "cozy-system"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "cozystack"}},
        "template": {
            "metadata": {"labels": {"app": "cozystack"}},
            "spec": {"hostNetwork": True, "containers": [{"name": "cozystack", "image": "installer"}]},
        },
    },
}


HTTPError: type[Exception] = lightkube_exceptions.httpx.HTTPError


def retrying(call: Callable[[], T], attempts: int = 20) -> T:
    """Run ``call``, retrying the stand-in's injected faults (500s, dropped connections)."""
    for attempt in range(attempts):
        try:
            return call()
        except ApiError as exc:
            if exc.status.code < 500 or attempt == attempts - 1:
                raise
        except (HTTPError, OSError):
            if attempt == attempts - 1:
                raise
        time.sleep(0.05)
    raise AssertionError("unreachable")


@dataclass
class Lab:
    """A running host cluster and a lightkube client to it (field manager ``test``)."""

    client: Client
    root: Path
    simulator_pid: int

    def apply(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        return retrying(lambda: self._apply(kind, body))

    def _apply(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        obj = self.client.patch(
            kind.res,
            meta["name"],
            body,
            namespace=meta.get("namespace") if kind.namespaced else None,
            patch_type=PatchType.APPLY,
            field_manager="test",
            force=True,
        )
        return kinds.as_dict(obj)

    def merge(self, kind: Kind, name: str, patch: dict[str, Any], namespace: str | None = None) -> dict:
        return retrying(
            lambda: kinds.as_dict(
                self.client.patch(kind.res, name, patch, namespace=namespace, patch_type=PatchType.MERGE)
            )
        )

    def delete(self, kind: Kind, name: str, namespace: str | None = None) -> None:
        """Delete, retrying faults; a retry that finds the object gone is the delete having worked."""
        try:
            retrying(lambda: self.client.delete(kind.res, name, namespace=namespace))
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return retrying(lambda: kinds.as_dict(self.client.get(kind.res, name, namespace=namespace)))
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str = "*") -> list[dict[str, Any]]:
        try:
            ns = namespace if kind.namespaced else None
            return retrying(lambda: [kinds.as_dict(o) for o in self.client.list(kind.res, namespace=ns)])
        except ApiError as exc:
            if exc.status.code == 404:
                return []
            raise

    def install_v0(self, data: dict[str, str]) -> None:
        """What the product's v0 install does first: namespace, ConfigMap, the installer Deployment."""
        self.apply(
            kinds.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cozy-system"}}
        )
        self.apply(
            kinds.CONFIGMAP,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cozystack", "namespace": "cozy-system"},
                "data": data,
            },
        )
        self.apply(kinds.DEPLOYMENT, INSTALLER)

    def log(self) -> str:
        path = self.root / "cozysim.log"
        return path.read_text()[-4000:] if path.exists() else "(no simulator log)"


def wait_for(what: str, probe: Callable[[], T | None], lab: Lab, timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` with the simulator log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n--- simulator log ---\n{lab.log()}")


def condition(obj: dict[str, Any] | None, kind: str = "Ready") -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return {}


def is_ready(obj: dict[str, Any] | None) -> bool:
    return condition(obj).get("status") == "True" and (obj or {}).get("status", {}).get(
        "observedGeneration"
    ) == (obj or {}).get("metadata", {}).get("generation")


@contextmanager
def lab_cluster(*, delay: float = 0.05, faults: str | None = None, simulator: bool = True) -> Iterator[Lab]:
    with host.running(simulator=simulator, delay=delay, faults=faults) as running:
        client = Client(config=KubeConfig.from_file(str(running.kubeconfig)), field_manager="test")
        try:
            yield Lab(client, running.root, running.pids.get("cozysim", 0))
        finally:
            client.close()
