"""kubectl as an independent client, and mutual TLS: certificates from another CA are refused."""

from __future__ import annotations

import json
import ssl
import threading
import time

import pytest
from kube_helpers import Raw, kubectl

from provisioner.lab.kube.host import KubeHost, KubePaths
from provisioner.lab.kube.pki import new_ca
from provisioner.lab.standin.kubeconfig import admin_client_cert

MANIFEST = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
  labels: {{app: demo}}
data:
  color: {color}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
  namespace: {ns}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: demo}}}}
  template:
    metadata: {{labels: {{app: demo}}}}
    spec:
      containers: [{{name: main, image: "busybox:1"}}]
"""


def test_kubectl_version_and_api_resources(kube: KubeHost) -> None:
    out = kubectl(kube, "version", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["serverVersion"]["gitVersion"].endswith("+provisioner-stand-in")
    out = kubectl(kube, "api-resources", "-o", "name")
    assert out.returncode == 0, out.stderr
    names = set(out.stdout.split())
    assert {
        "configmaps",
        "deployments.apps",
        "customresourcedefinitions.apiextensions.k8s.io",
        "leases.coordination.k8s.io",
    } <= names


def test_kubectl_server_side_apply_get_and_delete(kube: KubeHost, ns: str) -> None:
    out = kubectl(kube, "apply", "--server-side", "-f", "-", input=MANIFEST.format(ns=ns, color="blue"))
    assert out.returncode == 0, out.stderr
    assert "configmap/settings serverside-applied" in out.stdout
    out = kubectl(kube, "-n", ns, "get", "configmap", "settings", "-o", "json")
    doc = json.loads(out.stdout)
    assert doc["data"] == {"color": "blue"} and doc["metadata"]["labels"] == {"app": "demo"}
    out = kubectl(kube, "-n", ns, "get", "configmap", "settings", "-o", "json", "--show-managed-fields")
    managers = {m["manager"]: m["operation"] for m in json.loads(out.stdout)["metadata"]["managedFields"]}
    assert managers == {"kubectl": "Apply"}
    # another field manager changing the same field: conflict, then force
    out = kubectl(
        kube,
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "-f",
        "-",
        input=MANIFEST.format(ns=ns, color="red"),
    )
    assert out.returncode != 0 and "conflict" in out.stderr.lower() and ".data.color" in out.stderr
    out = kubectl(
        kube,
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "--force-conflicts",
        "-f",
        "-",
        input=MANIFEST.format(ns=ns, color="red"),
    )
    assert out.returncode == 0, out.stderr
    out = kubectl(
        kube, "-n", ns, "get", "configmaps", "-l", "app=demo", "-o", "jsonpath={.items[*].data.color}"
    )
    assert out.stdout == "red"
    out = kubectl(kube, "-n", ns, "get", "deployments")
    assert out.returncode == 0 and "demo" in out.stdout and "NAME" in out.stdout
    out = kubectl(kube, "-n", ns, "delete", "configmap", "settings")
    assert out.returncode == 0 and 'configmap "settings" deleted' in out.stdout
    out = kubectl(kube, "-n", ns, "get", "configmap", "settings")
    assert out.returncode == 1 and 'configmaps "settings" not found' in out.stderr


def test_kubectl_create_patch_label(kube: KubeHost, ns: str) -> None:
    out = kubectl(kube, "create", "-f", "-", input=MANIFEST.format(ns=ns, color="green"))
    assert out.returncode == 0, out.stderr
    out = kubectl(kube, "create", "-f", "-", input=MANIFEST.format(ns=ns, color="green"))
    assert out.returncode != 0 and "AlreadyExists" in out.stderr
    patch = '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:2"}]}}}}'
    out = kubectl(kube, "-n", ns, "patch", "deployment", "demo", "--type=strategic", "-p", patch)
    assert out.returncode == 0, out.stderr
    out = kubectl(
        kube, "-n", ns, "get", "deployment", "demo", "-o", "jsonpath={.spec.template.spec.containers[*].name}"
    )
    assert out.stdout == "main side"
    assert kubectl(kube, "-n", ns, "label", "configmap", "settings", "extra=yes").returncode == 0
    out = kubectl(kube, "-n", ns, "get", "configmaps", "-l", "extra in (yes,maybe)", "-o", "name")
    assert out.stdout.strip() == "configmap/settings"


def test_kubectl_get_watch(kube: KubeHost, ns: str) -> None:
    kubectl(kube, "apply", "--server-side", "-f", "-", input=MANIFEST.format(ns=ns, color="a"))
    result: dict[str, str] = {}

    def watch() -> None:
        out = kubectl(
            kube, "-n", ns, "get", "configmaps", "-w", "-o", "json", "--request-timeout=4s", timeout=20
        )
        result["out"] = out.stdout

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(1.5)
    kubectl(
        kube,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=MANIFEST.format(ns=ns, color="b"),
    )
    t.join(20)
    decoder, text, colors = json.JSONDecoder(), result["out"].strip(), []
    while text:
        doc, end = decoder.raw_decode(text)
        colors.append(doc["data"]["color"])
        text = text[end:].strip()
    assert colors == ["a", "b"]


def _ctx_with(kube: KubeHost, crt: bytes | None, key: bytes | None, tmp_path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(KubePaths(kube.root).pki / "ca.crt"))
    if crt and key:
        (tmp_path / "c.crt").write_bytes(crt)
        (tmp_path / "c.key").write_bytes(key)
        ctx.load_cert_chain(str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    return ctx


def test_client_certificate_from_another_ca_is_refused(kube: KubeHost, tmp_path) -> None:
    other_crt, other_key = new_ca("someone-else")
    crt, key = admin_client_cert(other_crt, other_key)
    stranger = Raw(kube, _ctx_with(kube, crt, key, tmp_path))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        stranger.request("GET", "/api/v1/namespaces")
    anonymous = Raw(kube, _ctx_with(kube, None, None, tmp_path))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        anonymous.request("GET", "/version")
    ours = KubePaths(kube.root).pki
    ok = Raw(
        kube, _ctx_with(kube, (ours / "admin.crt").read_bytes(), (ours / "admin.key").read_bytes(), tmp_path)
    )
    assert ok.request("GET", "/version")[0] == 200
