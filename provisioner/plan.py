"""What a run would do, per rack and node, with every value resolved.

The plan is pure data computed from the site: it is what `provisioner plan` prints and
what an operator reviews before powering anything on. Nothing here touches a machine.
"""

from __future__ import annotations

from typing import Any

from .inventory.model import Node, Role, Site
from .pipeline.stages import stage_names
from .state import Phase


def node_stages(site: Site, node: Node) -> list[str]:
    """The steps one node goes through inside the ``nodes`` stage: the phases its state record
    takes (``state.Phase``), the same names ``up`` records and ``status`` shows. How the config
    arrives (``config_delivery``) and which control plane bootstraps etcd are shown beside them."""
    return [p.value for p in Phase if p is not Phase.BLANK]


def node_plan(site: Site, node: Node) -> dict[str, Any]:
    talos = site.cluster.talos
    bmc = node.bmc
    return {
        "name": node.name,
        "rack": node.rack,
        "role": node.role.value,
        "ip": str(node.ip),
        "boot_mode": node.boot.mode.value,
        "boot_mac": node.boot.mac,
        "uuid": node.uuid,
        "serial": node.serial,
        "bmc": None
        if bmc is None
        else {
            "protocol": str(bmc.protocol),
            "endpoint": bmc.endpoint,
            "username": bmc.username,
            "password": str(bmc.password),  # the reference (env:/file:), never the secret
            # options owned by one protocol's settings model; None for the others
            "verify_tls": getattr(bmc, "verify_tls", None),
            "cipher_suite": getattr(bmc, "cipher_suite", None),
        },
        "install_disk": node.install_disk,
        "data_disks": list(node.data_disks),
        "labels": dict(node.labels),
        "installer_image": talos.installer,
        "config_delivery": talos.config_delivery.value,
        "bootstraps_etcd": node.role is Role.CONTROLPLANE
        and bool(site.controlplanes)
        and site.controlplanes[0].name == node.name,
        "stages": node_stages(site, node),
    }


def build_plan(site: Site, nodes: list[Node]) -> dict[str, Any]:
    """The whole plan for the selected ``nodes``: site-wide stages, then racks in inventory order."""
    bundle = site.cluster.bundle_spec
    racks: dict[str, list[dict[str, Any]]] = {r.name: [] for r in site.racks}
    for node in nodes:
        racks.setdefault(node.rack, []).append(node_plan(site, node))
    nets = site.networks
    return {
        "cluster": site.cluster.name,
        "bundle": bundle.name,
        "talos_version": site.cluster.talos.version,
        "installer_image": site.cluster.talos.installer,
        "kubernetes_version": site.cluster.kubernetes_version,
        "cozystack_version": site.cluster.cozystack_version,
        "root_host": site.cluster.root_host,
        "api_endpoint": site.api_endpoint,
        "config_delivery": site.cluster.talos.config_delivery.value,
        "management_subnet": str(nets.management.subnet) if nets else None,
        "vip": str(nets.management.vip) if nets and nets.management.vip is not None else None,
        "netboot_server": str(nets.netboot.server) if nets and nets.netboot else None,
        # Where secrets, configs and node records live (beside the inventory, not the cwd).
        "state_dir": str(site.state_dir),
        "stages": stage_names(bundle),
        "racks": [{"name": name, "nodes": rack_nodes} for name, rack_nodes in racks.items() if rack_nodes],
    }
