"""The KubeVirt and CDI custom resources and the status their operators report once deployed.

Facts from ``provisioner/cozystack/upstream/notes/kubevirt.md``: the KubeVirt CR is namespaced
(``cozy-kubevirt/kubevirt``), the CDI CR cluster-scoped (``cdi``, no status subresource: status is
written with the object). Healthy = ``phase: Deployed`` with Available=True, Progressing=False,
Degraded=False (plus ``observedGeneration`` for KubeVirt, ``observedVersion`` for CDI). A degraded
component leaves the phase at Deployed and sets Degraded=True (CDI ``CheckDegraded``; §5), which the
simulator does when the CR carries the annotation ``lab.provisioner/degraded`` (its value is the
message): a fault a test can switch on and off at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEGRADED_ANNOTATION = "lab.provisioner/degraded"
KUBEVIRT_VERSION = "v1.5.2"
CDI_VERSION = "v1.62.0"


def kubevirt_manifest() -> dict[str, Any]:
    """The KubeVirt CR as Cozystack v0.41.11 renders it (packages/system/kubevirt/templates/...-cr.yaml)."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "cozy-kubevirt"},
        "spec": {
            "certificateRotateStrategy": {},
            "configuration": {
                "commonInstancetypesDeployment": {"enabled": False},
                "developerConfiguration": {
                    "featureGates": [
                        "HotplugVolumes",
                        "ExpandDisks",
                        "LiveMigration",
                        "AutoResourceLimitsGate",
                        "CPUManager",
                        "GPU",
                        "VMExport",
                    ]
                },
                "evictionStrategy": "LiveMigrate",
                "vmRolloutStrategy": "LiveUpdate",
            },
            "workloadUpdateStrategy": {
                "workloadUpdateMethods": ["LiveMigrate", "Evict"],
                "batchEvictionInterval": "1m",
                "batchEvictionSize": 10,
            },
            "customizeComponents": {},
            "imagePullPolicy": "IfNotPresent",
            "monitorNamespace": "tenant-root",
        },
    }


def cdi_manifest() -> dict[str, Any]:
    """The CDI CR as Cozystack v0.41.11 renders it (packages/system/kubevirt-cdi/templates/cdi-cr.yaml)."""
    return {
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "CDI",
        "metadata": {"name": "cdi"},
        "spec": {
            "cloneStrategyOverride": "copy",
            "config": {"featureGates": ["HonorWaitForFirstConsumer", "ExpandDisks"]},
            "imagePullPolicy": "IfNotPresent",
            "infra": {
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            },
            "workload": {"nodeSelector": {"kubernetes.io/os": "linux"}},
        },
    }


def _conditions(
    wanted: list[tuple[str, str, str, str]], previous: Iterable[Mapping[str, Any]], now: str, time_key: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    conds = []
    for kind, value, reason, message in wanted:
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == value else now
        cond = {"type": kind, "status": value, "reason": reason, "message": message}
        cond["lastTransitionTime"] = since or now
        if time_key != "lastTransitionTime":
            cond[time_key] = old.get(time_key) or now
        conds.append(cond)
    return conds


def degraded_message(obj: Mapping[str, Any]) -> str | None:
    """The injected degradation message, or None when the CR is healthy."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(DEGRADED_ANNOTATION)
    if value is None:
        return None
    return value or "a component is not ready (fault)"


def kubevirt_status(obj: Mapping[str, Any], now: str) -> dict[str, Any]:
    """Deployed status of the KubeVirt CR (virt-operator ``UpdateConditionsAvailable``)."""
    previous = (obj.get("status") or {}).get("conditions") or ()
    degraded = degraded_message(obj)
    wanted = [
        ("Available", "True", "AllComponentsReady", "All components are ready."),
        ("Progressing", "False", "AllComponentsReady", "All components are ready."),
        (
            "Degraded",
            "True" if degraded else "False",
            "DeploymentFailed" if degraded else "AllComponentsReady",
            degraded or "All components are ready.",
        ),
        ("Created", "True", "AllResourcesCreated", "All resources were created."),
    ]
    return {
        "phase": "Deployed",
        "conditions": _conditions(wanted, previous, now, "lastProbeTime"),
        "observedGeneration": int((obj.get("metadata") or {}).get("generation") or 1),
        "observedKubeVirtVersion": KUBEVIRT_VERSION,
        "targetKubeVirtVersion": KUBEVIRT_VERSION,
        "operatorVersion": KUBEVIRT_VERSION,
        "observedKubeVirtRegistry": "quay.io/kubevirt",
        "targetKubeVirtRegistry": "quay.io/kubevirt",
        "defaultArchitecture": "amd64",
    }


def cdi_status(obj: Mapping[str, Any], now: str) -> dict[str, Any]:
    """Deployed status of the CDI CR (``MarkCrHealthyMessage``; ``CheckDegraded`` for the fault)."""
    previous = (obj.get("status") or {}).get("conditions") or ()
    degraded = degraded_message(obj)
    wanted = [
        ("Available", "True", "DeployCompleted", "Deployment Completed"),
        ("Progressing", "False", "DeployCompleted", ""),
        ("Degraded", "True" if degraded else "False", "", degraded or ""),
    ]
    return {
        "phase": "Deployed",
        "conditions": _conditions(wanted, previous, now, "lastHeartbeatTime"),
        "observedVersion": CDI_VERSION,
        "operatorVersion": CDI_VERSION,
        "targetVersion": CDI_VERSION,
    }
