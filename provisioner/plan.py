"""What a run would do, per rack and node, with every value resolved.

The plan is pure data computed from the site: it is what `provisioner plan` prints and
what an operator reviews before powering anything on.
"""

from __future__ import annotations

from typing import Any

from .inventory.model import Node, Site

NODE_STAGES = ["power-off", "pxe-once", "power-on", "fetch-config", "install", "boot-disk"]


def node_plan(site: Site, node: Node) -> dict[str, Any]:
    talos = site.cluster.talos
    return {
        "name": node.name,
        "role": node.role.value,
        "ip": str(node.ip),
        "boot_mode": node.boot.mode.value,
        "boot_mac": node.boot.mac,
        "uuid": node.uuid,
        "bmc": None if node.bmc is None else {"protocol": node.bmc.protocol.value, "endpoint": node.bmc.endpoint},
        "install_disk": node.install_disk,
        "data_disks": list(node.data_disks),
        "installer_image": talos.installer,
        "config_delivery": talos.config_delivery.value,
        "stages": list(NODE_STAGES),
    }


def build_plan(site: Site, nodes: list[Node]) -> dict[str, Any]:
    bundle = site.cluster.bundle_spec
    racks: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        racks.setdefault(node.rack, []).append(node_plan(site, node))
    return {
        "cluster": site.cluster.name,
        "bundle": bundle.name,
        "talos_version": site.cluster.talos.version,
        "kubernetes_version": site.cluster.kubernetes_version,
        "cozystack_version": site.cluster.cozystack_version,
        "api_endpoint": site.api_endpoint,
        "stages": bundle.stages(),
        "racks": [{"name": name, "nodes": rack_nodes} for name, rack_nodes in racks.items()],
    }
