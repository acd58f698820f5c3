"""Stand-in Cozystack installer manifests for the lab and the tests (lab-only, hence here).

The real release files sit on GitHub, out of reach here. These keep the documented shape
(``provisioner/cozystack/upstream/notes/platform-install.md`` §1.2 for v0.x, §7.2 for v1.x): the
same kinds, names, namespace labels, service account binding and the KubePrism environment the
product rewrites on hosted clusters; only the image is a stand-in, and every object says so in
the label ``provisioner.dev/stand-in: "true"``. The v1.x CRDs are the upstream files copied in
``provisioner/cozystack/upstream/crds/v1.6.2/``. ``provisioner platform assets import`` pins them
like real files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

STANDIN_LABEL = "provisioner.dev/stand-in"


def _meta(name: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**(labels or {}), STANDIN_LABEL: "true"}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _workload(
    name: str, sa: str, image: str, env: list[dict[str, Any]], tolerations: list[str]
) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(sa, "cozy-system")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(sa),
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "cozy-system"}],
            "roleRef": {
                "kind": "ClusterRole",
                "name": "cluster-admin",
                "apiGroup": "rbac.authorization.k8s.io",
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(name, "cozy-system"),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "hostNetwork": True,
                        "serviceAccountName": sa,
                        "containers": [{"name": name, "image": image, "env": env}],
                        "tolerations": [
                            {"key": k, "operator": "Exists", "effect": "NoSchedule"} for k in tolerations
                        ],
                    },
                },
            },
        },
    ]


def installer_v0(version: str) -> list[dict[str, Any]]:
    """The four objects of ``cozystack-installer.yaml`` (v0.41.x), stand-in image."""
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(
            "cozy-system",
            labels={"cozystack.io/system": "true", "pod-security.kubernetes.io/enforce": "privileged"},
        ),
    }
    env: list[dict[str, Any]] = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "localhost"},
        {"name": "INSTALL_FLUX", "value": "true"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "7445"},
        {"name": "K8S_AWAIT_ELECTION_ENABLED", "value": "1"},
        {"name": "K8S_AWAIT_ELECTION_NAME", "value": "cozystack"},
        {"name": "K8S_AWAIT_ELECTION_LOCK_NAME", "value": "cozystack"},
        {"name": "K8S_AWAIT_ELECTION_LOCK_NAMESPACE", "value": "cozy-system"},
        {"name": "K8S_AWAIT_ELECTION_IDENTITY", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    image = f"lab.invalid/cozystack-installer-stand-in:{version}"
    return [ns, *_workload("cozystack", "cozystack", image, env, _TOLERATIONS)]


_TOLERATIONS = ["node.kubernetes.io/not-ready", "node.cilium.io/agent-not-ready"]


def operator_v1(version: str, flavour: str) -> list[dict[str, Any]]:
    """``cozystack-operator-<talos|generic>.yaml`` (v1.x, bareNamespace), stand-in image."""
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            **_meta(
                "cozy-system",
                labels={
                    "cozystack.io/system": "true",
                    "platform.cozystack.io/no-delete": "true",
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
            ),
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
    }
    host, port = ("localhost", "7445") if flavour == "talos" else ("REPLACE_ME", "6443")
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": host},
        {"name": "KUBERNETES_SERVICE_PORT", "value": port},
    ]
    image = f"lab.invalid/cozystack-operator-stand-in:{version}"
    return [ns, *_workload("cozystack-operator", "cozystack", image, env, _TOLERATIONS)]


def crds_v1() -> list[dict[str, Any]]:
    base = resources.files("provisioner.cozystack").joinpath("upstream", "crds", "v1.6.2")
    docs = []
    for name in ("cozystack.io_packages.yaml", "cozystack.io_packagesources.yaml"):
        docs += [d for d in yaml.safe_load_all(base.joinpath(name).read_text()) if d]
    return docs


def write(version: str, directory: Path) -> list[Path]:
    """Write every stand-in asset of ``version`` (v0: installer; v1: CRDs + both operators)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict[str, Any]]]
    if version.startswith("v0."):
        files = {"cozystack-installer.yaml": installer_v0(version)}
    else:
        files = {
            "cozystack-crds.yaml": crds_v1(),
            "cozystack-operator-talos.yaml": operator_v1(version, "talos"),
            "cozystack-operator-generic.yaml": operator_v1(version, "generic"),
        }
    out = []
    for name, docs in files.items():
        path = directory / name
        header = (
            f"# STAND-IN for the Cozystack {version} release asset {name} (lab only; documented shape).\n"
        )
        path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False))
        out.append(path)
    return out
