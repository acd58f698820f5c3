"""The resource kinds the simulator reads and writes, as lightkube classes.

Built-in kinds use lightkube's models; Flux, Cozystack, piraeus, KubeVirt, CDI, MetalLB and the
aggregated Tenant API use generic resources (plain dicts), which exist only while their CRD (or the
APIService, for Tenant) is served.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources import apiextensions_v1, apiregistration_v1, apps_v1, coordination_v1, core_v1


@dataclass(frozen=True)
class Kind:
    """A resource class, its /status subresource class (None when status is written with the object)."""

    label: str
    res: Any
    status: Any
    namespaced: bool


def _generic(group: str, version: str, kind: str, plural: str, namespaced: bool, status: bool = True) -> Kind:
    make = create_namespaced_resource if namespaced else create_global_resource
    res = make(group, version, kind, plural)
    return Kind(f"{plural}.{group}", res, res.Status if status else None, namespaced)


NAMESPACE = Kind("namespaces", core_v1.Namespace, core_v1.NamespaceStatus, False)
CONFIGMAP = Kind("configmaps", core_v1.ConfigMap, None, True)
NODE = Kind("nodes", core_v1.Node, core_v1.NodeStatus, False)
SERVICE = Kind("services", core_v1.Service, core_v1.ServiceStatus, True)
EVENT = Kind("events", core_v1.Event, None, True)
DEPLOYMENT = Kind("deployments.apps", apps_v1.Deployment, apps_v1.DeploymentStatus, True)
LEASE = Kind("leases.coordination.k8s.io", coordination_v1.Lease, None, True)
CRD = Kind(
    "customresourcedefinitions.apiextensions.k8s.io",
    apiextensions_v1.CustomResourceDefinition,
    apiextensions_v1.CustomResourceDefinitionStatus,
    False,
)
APISERVICE = Kind(
    "apiservices.apiregistration.k8s.io",
    apiregistration_v1.APIService,
    apiregistration_v1.APIServiceStatus,
    False,
)

HELMRELEASE = _generic("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases", True)
HELMREPOSITORY = _generic("source.toolkit.fluxcd.io", "v1", "HelmRepository", "helmrepositories", True)
PACKAGE = _generic("cozystack.io", "v1alpha1", "Package", "packages", False)
PACKAGESOURCE = _generic("cozystack.io", "v1alpha1", "PackageSource", "packagesources", False)
LINSTORCLUSTER = _generic("piraeus.io", "v1", "LinstorCluster", "linstorclusters", False)
LINSTORSATELLITE = _generic("piraeus.io", "v1", "LinstorSatellite", "linstorsatellites", False)
LINSTORSATELLITECONFIG = _generic(
    "piraeus.io", "v1", "LinstorSatelliteConfiguration", "linstorsatelliteconfigurations", False
)
KUBEVIRT = _generic("kubevirt.io", "v1", "KubeVirt", "kubevirts", True)
CDI = _generic("cdi.kubevirt.io", "v1beta1", "CDI", "cdis", False, status=False)
IPADDRESSPOOL = _generic("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools", True)
TENANT = _generic("apps.cozystack.io", "v1alpha1", "Tenant", "tenants", True)


def as_dict(obj: Any) -> dict[str, Any]:
    """A lightkube object (model or generic) as a plain dict."""
    if obj is None:
        return {}
    if isinstance(obj, dict) and not hasattr(obj, "to_dict"):
        return obj
    return obj.to_dict()


def key(obj: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an object; namespace is "" for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's metadata ({} when absent)."""
    return obj.get("metadata") or {}


def now_text() -> str:
    """The current time as Kubernetes writes condition times (RFC 3339, seconds, UTC)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
