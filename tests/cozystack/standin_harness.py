"""Test harness around the Kubernetes API stand-in: plays Flux for HelmRelease status, so the
stage's waiting, root-cause and nudge logic is exercised over a real API (watch included)
without the Cozystack simulator."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from lightkube import Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.types import PatchType

import provisioner.cozystack.kube  # noqa: F401  (registers the generic kinds)
from provisioner.cozystack.kube import resource_class

HR_CRD = (
    Path(__file__).parents[2]
    / "provisioner/cozystack/upstream/crds/v0.41.11/EXTRACT_helmreleases.helm.toolkit.fluxcd.io.yaml"
)
HR = resource_class("helm.toolkit.fluxcd.io/v2", "HelmRelease")


def client(kubeconfig: Path) -> Client:
    return Client(config=KubeConfig.from_file(str(kubeconfig)).get(), field_manager="test-flux")


def install_hr_crd(c: Client) -> None:
    crd = yaml.safe_load(HR_CRD.read_text())
    c.apply(codecs.from_dict(crd), force=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            list(c.list(HR, namespace="*"))
            return
        except Exception:
            time.sleep(0.2)
    raise AssertionError("HelmRelease CRD never served")


def ensure_namespace(c: Client, name: str) -> None:
    c.apply(
        codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}), force=True
    )


def create_hr(c: Client, key: str) -> None:
    ns, name = key.split("/", 1)
    ensure_namespace(c, ns)
    obj = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "interval": "5m",
            "chart": {
                "spec": {"chart": name, "sourceRef": {"kind": "HelmRepository", "name": "cozystack-system"}}
            },
        },
    }
    c.apply(codecs.from_dict(obj), force=True)


def set_ready(c: Client, key: str, status: str, reason: str, message: str = "") -> None:
    ns, name = key.split("/", 1)
    live = c.get(HR, name, namespace=ns)
    gen = live.metadata.generation or 1
    body = {
        "status": {
            "observedGeneration": gen,
            "conditions": [
                {
                    "type": "Ready",
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": "2026-12-01T00:00:00Z",
                    "observedGeneration": gen,
                }
            ],
        }
    }
    c.patch(HR.Status, name, body, namespace=ns, patch_type=PatchType.MERGE)


def annotations(c: Client, key: str) -> dict[str, str]:
    ns, name = key.split("/", 1)
    return dict(c.get(HR, name, namespace=ns).metadata.annotations or {})


def request_counts(kubeconfig: Path, reset: bool = False) -> dict[str, int]:
    """The stand-in's request counter (``/stand-in/requests``), read with the kubeconfig's credentials."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c", Path(tmp) / "k"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ctx.load_cert_chain(cert, key)
    req = urllib.request.Request(
        cluster["server"] + "/stand-in/requests", method="DELETE" if reset else "GET"
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body.strip() else {}


def writes(counts: dict[str, Any]) -> int:
    return sum(
        n
        for k, n in counts.items()
        if k.split(" ", 1)[0].lower() in ("create", "update", "patch", "apply", "delete", "post", "put")
    )
