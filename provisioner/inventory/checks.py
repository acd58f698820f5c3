"""Cross-field rules of a site: the mistakes that caught real installs.

Each rule is a linear pass over the nodes (dicts keyed by the value that must be
unique, set membership for ranges), never a pairwise loop: a 10,000-node site must
validate in a blink. Problems carry the field path; the loader turns paths into lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import netaddr

from ..bundles import BUNDLES
from .model import BMCProtocol, ConfigDelivery, Role, Site

Path = tuple[Any, ...]


@dataclass(frozen=True)
class Finding:
    path: Path
    message: str
    severity: str = "error"


def _unique(
    site: Site, what: str, key: Any, field: tuple[Any, ...]
) -> Iterator[Finding]:
    seen: dict[Any, int] = {}
    for i, node in enumerate(site.nodes):
        value = key(node)
        if value is None:
            continue
        if value in seen:
            other = site.nodes[seen[value]]
            yield Finding(("nodes", i, *field), f"{what} {value} is already used by node {other.name} (nodes[{seen[value]}])")
        else:
            seen[value] = i


def _in_range(ip: netaddr.IPAddress, rng: netaddr.IPRange | None) -> bool:
    return rng is not None and rng.first <= int(ip) <= rng.last


def _overlaps(a: netaddr.IPRange | netaddr.IPNetwork, b: netaddr.IPRange | netaddr.IPNetwork) -> bool:
    return a.first <= b.last and b.first <= a.last


def check_site(site: Site) -> list[Finding]:
    return list(_checks(site))


def _checks(site: Site) -> Iterator[Finding]:  # noqa: C901 - one rule after another, read top to bottom
    bundle = BUNDLES[site.cluster.bundle.value]

    # --- bundle shape -------------------------------------------------------------------
    if bundle.hosted:
        if site.hosted is None:
            yield Finding(("cluster", "bundle"), f"bundle {bundle.name} runs on an existing cluster: add hosted.kubeconfig")
        if site.nodes:
            yield Finding(("nodes",), f"bundle {bundle.name} uses an existing cluster; it provisions no nodes (remove them)")
    else:
        if site.hosted is not None:
            yield Finding(("hosted",), f"bundle {bundle.name} provisions its own cluster; hosted.kubeconfig does not apply")
        if not site.nodes:
            yield Finding(("nodes",), f"bundle {bundle.name} installs Talos on bare metal: at least one node is required")
        if site.networks is None:
            yield Finding(("networks",), f"bundle {bundle.name} needs a networks section (management subnet, netboot server)")
        elif site.networks.netboot is None:
            yield Finding(("networks", "management"), "networks.netboot.server is required to network-boot the nodes")

    if bundle.requires_root_host:
        if not site.cluster.root_host:
            yield Finding(("cluster", "root_host"), f"bundle {bundle.name} requires cluster.root_host (the tenant-root domain)")
        if not bundle.hosted and site.api_endpoint is None:
            yield Finding(
                ("cluster", "api_server_endpoint"),
                f"bundle {bundle.name} requires an API endpoint: set networks.management.vip or cluster.api_server_endpoint",
            )
        if bundle.hosted and not site.cluster.api_server_endpoint:
            yield Finding(("cluster", "api_server_endpoint"), f"bundle {bundle.name} requires cluster.api_server_endpoint")

    if site.tenants is not None and not bundle.has_multitenancy:
        yield Finding(("tenants",), f"bundle {bundle.name} has no multitenancy: remove the tenants section or use a paas-* bundle")

    # --- racks ----------------------------------------------------------------------------
    rack_names: dict[str, int] = {}
    for i, rack in enumerate(site.racks):
        if rack.name in rack_names:
            yield Finding(("racks", i, "name"), f"rack {rack.name} is defined twice (also racks[{rack_names[rack.name]}])")
        rack_names.setdefault(rack.name, i)

    # --- nodes: uniqueness ------------------------------------------------------------------
    yield from _unique(site, "node name", lambda n: n.name, ("name",))
    yield from _unique(site, "boot MAC", lambda n: n.boot.mac, ("boot", "mac"))
    yield from _unique(site, "IP address", lambda n: n.ip, ("ip",))
    yield from _unique(site, "SMBIOS UUID", lambda n: n.uuid, ("uuid",))
    yield from _unique(site, "BMC endpoint", lambda n: n.bmc.endpoint if n.bmc else None, ("bmc", "address"))

    cps = 0
    has_data_disks = False
    for i, node in enumerate(site.nodes):
        if node.role is Role.CONTROLPLANE:
            cps += 1
        if site.racks and node.rack not in rack_names:
            yield Finding(("nodes", i, "rack"), f"rack {node.rack!r} is not defined under racks")
        if not bundle.hosted and node.bmc is None:
            yield Finding(("nodes", i, "bmc"), f"node {node.name} has no BMC: bundle {bundle.name} powers nodes on through their BMC")
        if node.bmc is not None and node.bmc.protocol is BMCProtocol.IPMI and node.bmc.ca_file:
            yield Finding(("nodes", i, "bmc", "ca_file"), "ca_file applies to Redfish only; IPMI has no TLS")
        if node.install_disk in node.data_disks:
            yield Finding(("nodes", i, "data_disks"), f"{node.install_disk} is the install disk; it cannot also be a data disk")
        if node.data_disks:
            has_data_disks = True
        elif bundle.has_linstor:
            yield Finding(
                ("nodes", i, "data_disks"),
                f"node {node.name} has no data disks: it will hold no LINSTOR storage",
                "warning",
            )

    if not bundle.hosted and site.nodes:
        if cps == 0:
            yield Finding(("nodes",), "at least one node must have role controlplane")
        elif cps not in (1, 3, 5):
            why = "an even count gives etcd no better fault tolerance and risks split votes" if cps % 2 == 0 else ""
            yield Finding(("nodes",), f"{cps} control planes: use 1, 3 or 5" + (f" ({why})" if why else ""))
        if bundle.has_linstor and not has_data_disks:
            yield Finding(("nodes",), f"bundle {bundle.name} installs LINSTOR storage but no node lists data_disks")

    # --- networks -------------------------------------------------------------------------
    nets = site.networks
    if nets is None:
        return
    mgmt = nets.management
    subnet = mgmt.subnet
    dhcp_range = mgmt.dhcp.range

    if mgmt.gateway not in subnet:
        yield Finding(("networks", "management", "gateway"), f"gateway {mgmt.gateway} is outside the management subnet {subnet}")
    if dhcp_range is not None and not (subnet.first <= dhcp_range.first and dhcp_range.last <= subnet.last):
        yield Finding(("networks", "management", "dhcp", "range"), f"DHCP range is outside the management subnet {subnet}")
    reserved = {int(subnet.network), int(subnet.broadcast)} if subnet.size > 2 and subnet.broadcast else set()

    node_ips = {int(n.ip) for n in site.nodes}
    vip = mgmt.vip
    if vip is not None:
        if vip not in subnet:
            yield Finding(("networks", "management", "vip"), f"VIP {vip} is outside the management subnet {subnet}")
        if int(vip) in node_ips:
            yield Finding(("networks", "management", "vip"), f"VIP {vip} is also a node's IP address")
        if _in_range(vip, dhcp_range):
            yield Finding(("networks", "management", "vip"), f"VIP {vip} lies inside the DHCP range")
        if vip == mgmt.gateway:
            yield Finding(("networks", "management", "vip"), f"VIP {vip} is the gateway address")

    if nets.netboot is not None:
        server = nets.netboot.server
        if server not in subnet and not any(r.boot_server for r in site.racks):
            yield Finding(("networks", "netboot", "server"), f"netboot server {server} is outside the management subnet {subnet}")
        if int(server) in node_ips:
            yield Finding(("networks", "netboot", "server"), f"netboot server {server} is also a node's IP address")
        if vip is not None and server == vip:
            yield Finding(("networks", "netboot", "server"), "netboot server must not be the control-plane VIP")
    if site.cluster.talos.config_delivery is ConfigDelivery.URL and nets.netboot is None and not bundle.hosted:
        yield Finding(("cluster", "talos", "config_delivery"), "config delivery 'url' needs networks.netboot.server")

    for i, node in enumerate(site.nodes):
        if node.ip not in subnet:
            yield Finding(("nodes", i, "ip"), f"{node.ip} is outside the management subnet {subnet}")
        elif int(node.ip) in reserved:
            yield Finding(("nodes", i, "ip"), f"{node.ip} is the network or broadcast address of {subnet}")
        if node.ip == mgmt.gateway:
            yield Finding(("nodes", i, "ip"), f"{node.ip} is the gateway address")
        if _in_range(node.ip, dhcp_range):
            yield Finding(("nodes", i, "ip"), f"{node.ip} lies inside the DHCP range; reserve it outside the dynamic pool")

    if nets.metallb is not None:
        pool = nets.metallb.range
        path = ("networks", "metallb", "range")
        if not (subnet.first <= pool.first and pool.last <= subnet.last):
            yield Finding(path, f"MetalLB range is outside the management subnet {subnet}")
        if dhcp_range is not None and _overlaps(pool, dhcp_range):
            yield Finding(path, "MetalLB range overlaps the DHCP range")
        if vip is not None and _in_range(vip, pool):
            yield Finding(path, f"MetalLB range contains the VIP {vip}")
        if _in_range(mgmt.gateway, pool):
            yield Finding(path, f"MetalLB range contains the gateway {mgmt.gateway}")
        if nets.netboot is not None and _in_range(nets.netboot.server, pool):
            yield Finding(path, f"MetalLB range contains the netboot server {nets.netboot.server}")
        for i, node in enumerate(site.nodes):
            if _in_range(node.ip, pool):
                yield Finding(("nodes", i, "ip"), f"{node.ip} lies inside the MetalLB range")
    elif bundle.metallb and not bundle.hosted:
        yield Finding(("networks", "metallb"), f"bundle {bundle.name} installs MetalLB: add networks.metallb.range", "warning")

    named = [
        ("management", ("networks", "management", "subnet"), subnet),
        ("pod", ("networks", "pod_cidr"), nets.pod_cidr),
        ("service", ("networks", "service_cidr"), nets.service_cidr),
        ("join", ("networks", "join_cidr"), nets.join_cidr),
    ]
    for a in range(len(named)):
        for b in range(a + 1, len(named)):
            if _overlaps(named[a][2], named[b][2]):
                yield Finding(named[b][1], f"{named[b][0]} network {named[b][2]} overlaps the {named[a][0]} network {named[a][2]}")
    if nets.pod_gateway not in nets.pod_cidr:
        yield Finding(("networks", "pod_gateway"), f"pod gateway {nets.pod_gateway} is outside pod_cidr {nets.pod_cidr}")
