"""Tenant namespaces and their inherited services: the simulator's own reading of the tenant chart.

Deliberately independent of ``provisioner/tenants.py``: the product and the lab each implement the rules
from upstream facts, so a test comparing them checks both. Rules (``notes/platform-install.md`` §6,
``notes/cozystack.md`` "Tenants", seed ``cozystack-core-concepts``):

- Tenant ``root`` lives in namespace ``tenant-root`` (rendered by the platform); its labels are fixed:
  etcd, ingress, monitoring and seaweedfs all ``tenant-root``, host = the root host.
- A Tenant ``<name>`` created in namespace ``X`` lives in ``tenant-<name>`` when X is tenant-root, else
  in ``X-<name>``. Names must not contain dashes.
- Each service (etcd, ingress, monitoring, seaweedfs) resolves to the tenant's own namespace when its
  spec enables it, else to what the parent resolved. host = ``spec.host`` or ``<name>.<parent host>``.
- The namespace carries ``namespace.cozystack.io/{etcd,ingress,monitoring,seaweedfs,host}`` and
  ``tenant.cozystack.io/<ns>: ""`` for itself and every ancestor.
- Services the tenant runs become HelmReleases in its own namespace: one per enabled service
  (``etcd``, ``ingress``, ``monitoring``, ``seaweedfs``) plus ``info`` always (templates/*.yaml).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SERVICES = ("etcd", "ingress", "monitoring", "seaweedfs")
ROOT_NAMESPACE = "tenant-root"
LABEL_PREFIX = "namespace.cozystack.io/"
TENANT_LABEL_PREFIX = "tenant.cozystack.io/"


class TenantError(ValueError):
    """A Tenant that cannot be placed (dashed name, parent that is not a tenant namespace)."""


@dataclass(frozen=True)
class TenantNamespace:
    """A tenant's namespace with the resolved service namespaces and host."""

    name: str
    host: str
    services: tuple[tuple[str, str], ...]  # (service, namespace serving it), in SERVICES order
    lineage: tuple[str, ...]  # tenant namespaces from tenant-root down to this one

    def serving(self, service: str) -> str:
        return dict(self.services)[service]

    def labels(self) -> dict[str, str]:
        """The labels the tenant chart puts on the namespace."""
        labels = {f"{LABEL_PREFIX}{svc}": ns for svc, ns in self.services}
        labels[f"{LABEL_PREFIX}host"] = self.host
        labels.update({f"{TENANT_LABEL_PREFIX}{ns}": "" for ns in self.lineage})
        return labels

    @classmethod
    def from_labels(cls, name: str, labels: Mapping[str, str]) -> TenantNamespace | None:
        """Read a tenant namespace back from its labels; None when it is not a tenant namespace."""
        if f"{LABEL_PREFIX}host" not in labels or any(f"{LABEL_PREFIX}{s}" not in labels for s in SERVICES):
            return None
        lineage = tuple(
            sorted(
                (k.removeprefix(TENANT_LABEL_PREFIX) for k in labels if k.startswith(TENANT_LABEL_PREFIX)),
                key=lambda ns: (ns != ROOT_NAMESPACE, len(ns)),
            )
        )
        return cls(
            name=name,
            host=labels[f"{LABEL_PREFIX}host"],
            services=tuple((s, labels[f"{LABEL_PREFIX}{s}"]) for s in SERVICES),
            lineage=lineage or (name,),
        )


def root(host: str) -> TenantNamespace:
    """tenant-root as the platform chart renders it (every service served by tenant-root)."""
    return TenantNamespace(
        name=ROOT_NAMESPACE,
        host=host,
        services=tuple((s, ROOT_NAMESPACE) for s in SERVICES),
        lineage=(ROOT_NAMESPACE,),
    )


def check_name(name: str) -> None:
    """Refuse names the tenant chart refuses (dashes) and names Kubernetes refuses."""
    if "-" in name:
        raise TenantError(f"tenant name {name!r}: tenant names must not contain dashes")
    if not name or not name.isalnum() or not name.islower():
        raise TenantError(f"tenant name {name!r}: tenant names must be lower-case letters and digits")


def child(parent: TenantNamespace, name: str, spec: Mapping[str, Any]) -> TenantNamespace:
    """The namespace of Tenant ``name`` created in ``parent`` with ``spec``. Raises TenantError."""
    check_name(name)
    ns = f"tenant-{name}" if parent.name == ROOT_NAMESPACE else f"{parent.name}-{name}"
    host = str(spec.get("host") or "") or f"{name}.{parent.host}"
    services = tuple((svc, ns if spec.get(svc) is True else parent.serving(svc)) for svc in SERVICES)
    return TenantNamespace(name=ns, host=host, services=services, lineage=(*parent.lineage, ns))


def service_releases(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """HelmRelease names the tenant chart renders in the tenant's own namespace."""
    return (*(svc for svc in SERVICES if spec.get(svc) is True), "info")


@dataclass(frozen=True)
class TreeNode:
    """One tenant for ``resolve_tree``: its name, the namespace it is created in, its spec."""

    name: str
    namespace: str
    spec: Mapping[str, Any]


def resolve_tree(root_host: str, tenants: Iterable[TreeNode]) -> dict[str, TenantNamespace]:
    """Resolve a whole tree at once (namespace -> TenantNamespace), parents before children.

    The ``root`` Tenant in tenant-root only changes the root host (its labels are fixed). Tenants whose
    parent namespace never resolves are left out, as the real chart would have no parent values.
    """
    pending = list(tenants)
    host = root_host
    for node in pending:
        if node.namespace == ROOT_NAMESPACE and node.name == "root" and node.spec.get("host"):
            host = str(node.spec["host"])
    resolved = {ROOT_NAMESPACE: root(host)}
    pending = [n for n in pending if not (n.namespace == ROOT_NAMESPACE and n.name == "root")]
    progress = True
    while pending and progress:
        progress = False
        for node in list(pending):
            parent = resolved.get(node.namespace)
            if parent is None:
                continue
            ns = child(parent, node.name, node.spec)
            resolved[ns.name] = ns
            pending.remove(node)
            progress = True
    return resolved
