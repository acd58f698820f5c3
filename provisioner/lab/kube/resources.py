"""Which resources the stand-in serves: the built-in kinds, CRDs' resources, the aggregated Tenant API.

The built-in table covers what the platform stage and kubectl need. A CustomResourceDefinition's
resources are served as soon as it is stored (every version marked ``served``; objects are stored
once and returned with the requested apiVersion, since there is no conversion). Cozystack's Tenant
API has no CRD: it is an APIService, so ``tenants`` are served while the APIService
``v1alpha1.apps.cozystack.io`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and in etcd."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource
    singular: str = ""
    categories: tuple[str, ...] = ()
    storage_versions: tuple[str, ...] = field(default=(), compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def prefix(self, namespace: str | None = None) -> str:
        """The etcd key prefix of this resource (of one namespace when given)."""
        base = f"/registry/{self.group or 'core'}/{self.plural}/"
        return base + f"{namespace}/" if namespace else base

    def key(self, namespace: str | None, name: str) -> str:
        return self.prefix(namespace if self.namespaced else None) + name

    def discovery(self) -> dict[str, Any]:
        """The APIResource entries (the resource and its status subresource) for discovery."""
        out: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            out["shortNames"] = list(self.short_names)
        if self.categories:
            out["categories"] = list(self.categories)
        return out


def _r(group: str, version: str, plural: str, kind: str, namespaced: bool, *short: str, status: bool = False):
    return ResourceType(group, version, plural, kind, namespaced, tuple(short), status=status)


BUILTIN: tuple[ResourceType, ...] = (
    _r("", "v1", "namespaces", "Namespace", False, "ns", status=True),
    _r("", "v1", "configmaps", "ConfigMap", True, "cm"),
    _r("", "v1", "secrets", "Secret", True),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, "sa"),
    _r("", "v1", "services", "Service", True, "svc", status=True),
    _r("", "v1", "nodes", "Node", False, "no", status=True),
    _r("", "v1", "events", "Event", True, "ev"),
    _r("", "v1", "pods", "Pod", True, "po", status=True),
    _r("", "v1", "endpoints", "Endpoints", True, "ep"),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, "pvc", status=True),
    _r("", "v1", "persistentvolumes", "PersistentVolume", False, "pv", status=True),
    _r("apps", "v1", "deployments", "Deployment", True, "deploy", status=True),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, "ds", status=True),
    _r("apps", "v1", "statefulsets", "StatefulSet", True, "sts", status=True),
    _r("coordination.k8s.io", "v1", "leases", "Lease", True),
    _r("events.k8s.io", "v1", "events", "Event", True, "ev"),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, "sc"),
    _r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "crd",
        "crds",
        status=True,
    ),
    _r("apiregistration.k8s.io", "v1", "apiservices", "APIService", False, status=True),
)

CRD_TYPE = next(r for r in BUILTIN if r.plural == "customresourcedefinitions")
APISERVICE_TYPE = next(r for r in BUILTIN if r.plural == "apiservices")
NAMESPACE_TYPE = next(r for r in BUILTIN if r.plural == "namespaces")

# Cozystack's aggregated API (cozystack-api): served while this APIService object exists.
TENANT_APISERVICE = "v1alpha1.apps.cozystack.io"
TENANT_TYPE = ResourceType("apps.cozystack.io", "v1alpha1", "tenants", "Tenant", True, status=True)
TENANT_NAME_PATTERN = r"^[a-z0-9]+$"

# Groups in discovery order, with their preferred version.
BUILTIN_GROUP_ORDER = (
    "",
    "apps",
    "events.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "coordination.k8s.io",
)


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types one stored CRD serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
    if not (group and plural and kind):
        return []
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        out.append(
            ResourceType(
                group,
                v.get("name", ""),
                plural,
                kind,
                namespaced,
                tuple(names.get("shortNames") or ()),
                status="status" in (v.get("subresources") or {}),
                singular=names.get("singular", ""),
                categories=tuple(names.get("categories") or ()),
            )
        )
    return out


class Catalog:
    """The set of served resource types, rebuilt from the built-ins plus stored CRDs/APIServices."""

    def __init__(self) -> None:
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.set_dynamic([], False)

    def set_dynamic(self, crds: list[dict[str, Any]], tenants: bool) -> None:
        types = {(r.group, r.version, r.plural): r for r in BUILTIN}
        for crd in crds:
            if (crd.get("metadata") or {}).get("deletionTimestamp"):
                continue
            for r in crd_types(crd):
                types.setdefault((r.group, r.version, r.plural), r)
        if tenants:
            types[(TENANT_TYPE.group, TENANT_TYPE.version, TENANT_TYPE.plural)] = TENANT_TYPE
        self.types = types

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions (built-in order first, then the rest sorted)."""
        out: dict[str, list[str]] = {}
        for g, v, _ in self.types:
            if v not in out.setdefault(g, []):
                out[g].append(v)
        order = {g: i for i, g in enumerate(BUILTIN_GROUP_ORDER)}
        return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [r for (g, v, _), r in self.types.items() if g == group and v == version]
