"""The Cozystack tenant tree: namespaces, hosts, service resolution and access.

Rules (Cozystack's tenant chart): tenant-root always exists; a child ``foo`` of
tenant-root lives in ``tenant-foo``, its child ``bar`` in ``tenant-foo-bar``; a tenant's
host is its own or ``<name>.<parent host>``; each cluster service is served by the
nearest tenant on the path to the root that enables it. A tenant may see and manage
itself and its descendants only: ``can_manage`` is the one place that rule lives.

It lives with the inventory model because validating an inventory needs it (a tenant tree
with clashing namespaces is an invalid inventory): the dependency runs one way,
``inventory.tenants`` -> ``inventory.model``, with no import hidden in a function.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .model import Site, Tenant

SERVICES = ("etcd", "ingress", "monitoring", "seaweedfs")
ROOT_NAMESPACE = "tenant-root"


@dataclass
class TenantNode:
    name: str  # "root" for tenant-root
    namespace: str
    host: str | None
    spec: Tenant
    parent: TenantNode | None = None
    children: list[TenantNode] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)  # service -> namespace serving it

    @property
    def path(self) -> tuple[str, ...]:
        node: TenantNode | None = self
        names: list[str] = []
        while node is not None:
            names.append(node.name)
            node = node.parent
        return tuple(reversed(names))

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    def walk(self) -> Iterator[TenantNode]:
        """This tenant and every descendant, depth first, parents before children."""
        stack = [self]
        while stack:  # iterative: a deep tree must not hit Python's recursion limit
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def descendants(self) -> Iterator[TenantNode]:
        walker = self.walk()
        next(walker)
        yield from walker

    def ancestors(self) -> Iterator[TenantNode]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def namespace_labels(self) -> dict[str, str]:
        """The labels Cozystack puts on the tenant namespace (namespace.cozystack.io/*)."""
        labels = {f"namespace.cozystack.io/{svc}": ns for svc, ns in self.services.items()}
        if self.host:
            labels["namespace.cozystack.io/host"] = self.host
        return labels

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "host": self.host,
            "enabled": [s for s in SERVICES if getattr(self.spec, s)],
            "services": dict(self.services),
            "children": [c.as_dict() for c in self.children],
        }


def child_namespace(parent_namespace: str, name: str) -> str:
    if parent_namespace == ROOT_NAMESPACE:
        return f"tenant-{name}"
    return f"{parent_namespace}-{name}"


def build_tree(root_spec: Tenant, root_host: str | None) -> TenantNode:
    """Resolve namespaces, hosts and services for the whole tree, top-down in one pass."""
    root = TenantNode("root", ROOT_NAMESPACE, root_spec.host or root_host, root_spec)
    stack = [root]
    while stack:
        node = stack.pop()
        parent_services = node.parent.services if node.parent else {}
        for svc in SERVICES:
            if getattr(node.spec, svc):
                node.services[svc] = node.namespace
            elif svc in parent_services:
                node.services[svc] = parent_services[svc]
        for name, spec in node.spec.children.items():
            host = spec.host or (f"{name}.{node.host}" if node.host else None)
            child = TenantNode(name, child_namespace(node.namespace, name), host, spec, parent=node)
            node.children.append(child)
            stack.append(child)
    return root


def tree_for(site: Site) -> TenantNode:
    return build_tree(site.tenant_root, site.cluster.root_host)


def find(root: TenantNode, namespace: str) -> TenantNode:
    for node in root.walk():
        if node.namespace == namespace:
            return node
    raise KeyError(namespace)


def can_manage(actor: TenantNode, target: TenantNode) -> bool:
    """True when ``actor`` may view and manage ``target``: itself or a descendant, never
    an ancestor or a sibling branch."""
    node: TenantNode | None = target
    while node is not None:
        if node is actor:
            return True
        node = node.parent
    return False


def tree_problems(root: TenantNode) -> Iterator[tuple[tuple[str, ...], str]]:
    """Problems that only show once the tree is resolved: namespaces that Kubernetes
    would refuse (over 63 characters) and hosts that are not valid DNS names."""
    for node in root.walk():
        path = ("tenants", "root", *[p for n in node.path[1:] for p in ("children", n)])
        if len(node.namespace) > 63:
            yield path, f"namespace {node.namespace} is longer than 63 characters; use shorter tenant names"
        if node.host and len(node.host) > 253:
            yield path, f"host {node.host} is longer than 253 characters"
