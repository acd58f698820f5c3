"""What the report needs to know about the site, detached from the inventory model.

The report draws racks, nodes and tenants; it never needs BMC addresses or credentials.
Copying just names, racks and roles into small records keeps secrets out of the page by
construction and lets the benchmarks describe a 1,000-node site without writing and
validating a 1,000-node inventory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inventory.model import Node, Site
from ..tenants import TenantNode, tree_for


@dataclass(frozen=True)
class NodeInfo:
    name: str
    rack: str
    role: str  # "controlplane" | "worker"


@dataclass(frozen=True)
class SiteView:
    cluster: str
    bundle: str
    nodes: tuple[NodeInfo, ...]  # inventory order
    rack_order: tuple[str, ...]  # declared racks first, then racks only nodes name
    tenants: TenantNode | None = None
    hosted: bool = False
    bundle_enable: tuple[str, ...] = field(default_factory=tuple)  # optional releases switched on
    bundle_disable: tuple[str, ...] = field(default_factory=tuple)

    def racks(self) -> list[tuple[str, list[NodeInfo]]]:
        """Racks in order, each with its nodes in inventory (rack) order."""
        by_rack: dict[str, list[NodeInfo]] = {r: [] for r in self.rack_order}
        for node in self.nodes:
            by_rack.setdefault(node.rack, []).append(node)
        return list(by_rack.items())

    @property
    def controlplanes(self) -> list[str]:
        return [n.name for n in self.nodes if n.role == "controlplane"]


def view_of(site: Site, selected: list[Node] | None = None) -> SiteView:
    """The report's view of a validated site; with ``selected`` (the --rack/--node
    selection), only those nodes and their racks."""
    bundle = site.cluster.bundle_spec
    nodes = site.nodes if selected is None else selected
    rack_order = [r.name for r in site.racks if selected is None or any(n.rack == r.name for n in nodes)]
    for node in nodes:
        if node.rack not in rack_order:
            rack_order.append(node.rack)
    tenants = tree_for(site) if bundle.has_multitenancy else None
    platform = getattr(site, "platform", None)  # platform settings: absent from older inventories
    return SiteView(
        cluster=site.cluster.name,
        bundle=site.cluster.bundle.value,
        nodes=tuple(NodeInfo(n.name, n.rack, n.role.value) for n in nodes),
        rack_order=tuple(rack_order),
        tenants=tenants,
        hosted=bundle.hosted,
        bundle_enable=tuple(getattr(platform, "bundle_enable", ()) or ()),
        bundle_disable=tuple(getattr(platform, "bundle_disable", ()) or ()),
    )
