"""Cross-field rules of a site: the mistakes that caught real installs.

Each rule is a linear pass over the nodes (dicts keyed by the value that must be
unique, integer bounds for subnets and ranges), never a pairwise loop: a 10,000-node
site must validate in a blink. Problems carry the field path; the loader turns paths
into file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import netaddr

from ..bundles import BUNDLES, Bundle
from .filechecks import patch_file_problems
from .model import Networks, Node, Role, Site

FieldPath = tuple[Any, ...]
Span: TypeAlias = netaddr.IPRange | netaddr.IPNetwork


@dataclass(frozen=True)
class Finding:
    path: FieldPath
    message: str
    severity: str = "error"  # "error" or "warning"


def check_site(site: Site) -> list[Finding]:
    """Every cross-field problem of ``site``, errors and warnings, in reading order."""
    bundle = BUNDLES[site.cluster.bundle.value]
    findings = [
        *_bundle_shape(site, bundle),
        *_racks(site),
        *_node_uniqueness(site),
        *_nodes(site, bundle),
        *_platform(site, bundle),
        *(Finding(path, message) for path, message in patch_file_problems(site)),
    ]
    if site.networks is not None:
        findings += _networks(site, site.networks, bundle)
    return findings


def _bundle_shape(site: Site, bundle: Bundle) -> Iterator[Finding]:
    """Hosted bundles run on an existing cluster; full ones install Talos on nodes."""
    name = bundle.name
    if bundle.hosted:
        if site.hosted is None:
            yield Finding(
                ("cluster", "bundle"), f"bundle {name} runs on an existing cluster: add hosted.kubeconfig"
            )
        if site.nodes:
            yield Finding(
                ("nodes",), f"bundle {name} uses an existing cluster and provisions no nodes: remove them"
            )
    else:
        if site.hosted is not None:
            yield Finding(
                ("hosted",), f"bundle {name} provisions its own cluster; hosted.kubeconfig does not apply"
            )
        if not site.nodes:
            yield Finding(
                ("nodes",), f"bundle {name} installs Talos on bare metal: at least one node is required"
            )
        if site.networks is None:
            yield Finding(
                ("networks",), f"bundle {name} needs a networks section (management subnet, netboot)"
            )
        elif site.networks.netboot is None:
            yield Finding(
                ("networks",), f"bundle {name} network-boots its nodes: set networks.netboot.server"
            )

    if bundle.requires_root_host:
        if not site.cluster.root_host:
            yield Finding(
                ("cluster", "root_host"), f"bundle {name} requires cluster.root_host (the tenant-root domain)"
            )
        if bundle.hosted and not site.cluster.api_server_endpoint:
            yield Finding(
                ("cluster", "api_server_endpoint"), f"bundle {name} requires cluster.api_server_endpoint"
            )
        elif not bundle.hosted and site.nodes and site.api_endpoint is None:
            yield Finding(
                ("cluster", "api_server_endpoint"),
                f"bundle {name} requires an API endpoint: "
                "set networks.management.vip or cluster.api_server_endpoint",
            )

    if site.tenants is not None and not bundle.has_multitenancy:
        yield Finding(
            ("tenants",),
            f"bundle {name} has no multitenancy: remove the tenants section or use a paas-* bundle",
        )


def _racks(site: Site) -> Iterator[Finding]:
    first: dict[str, int] = {}
    for i, rack in enumerate(site.racks):
        if rack.name in first:
            yield Finding(
                ("racks", i, "name"), f"rack {rack.name} is defined twice (also racks[{first[rack.name]}])"
            )
        first.setdefault(rack.name, i)


def _unique(site: Site, what: str, key: Callable[[Node], Any], field: FieldPath) -> Iterator[Finding]:
    seen: dict[Any, int] = {}
    for i, node in enumerate(site.nodes):
        value = key(node)
        if value is None:
            continue
        j = seen.setdefault(value, i)
        if j != i:
            yield Finding(
                ("nodes", i, *field),
                f"{what} {value} is already used by node {site.nodes[j].name} (nodes[{j}])",
            )


def _node_uniqueness(site: Site) -> Iterator[Finding]:
    yield from _unique(site, "node name", lambda n: n.name, ("name",))
    yield from _unique(site, "boot MAC", lambda n: n.boot.mac, ("boot", "mac"))
    yield from _unique(site, "IP address", lambda n: n.ip, ("ip",))
    yield from _unique(site, "SMBIOS UUID", lambda n: n.uuid, ("uuid",))
    yield from _unique(site, "serial number", lambda n: n.serial, ("serial",))
    yield from _unique(site, "BMC endpoint", lambda n: n.bmc.endpoint if n.bmc else None, ("bmc", "address"))


def _nodes(site: Site, bundle: Bundle) -> Iterator[Finding]:
    rack_names = {r.name for r in site.racks}
    controlplanes = 0
    with_data_disks = 0
    for i, node in enumerate(site.nodes):
        if node.role is Role.CONTROLPLANE:
            controlplanes += 1
        if site.racks and node.rack not in rack_names:
            known = ", ".join(sorted(rack_names))
            yield Finding(
                ("nodes", i, "rack"), f"rack {node.rack!r} is not defined under racks (defined: {known})"
            )
        if not bundle.hosted and node.bmc is None:
            yield Finding(
                ("nodes", i, "bmc"),
                f"node {node.name} has no BMC: bundle {bundle.name} powers nodes on through it",
            )
        if node.install_disk in node.data_disks:
            yield Finding(
                ("nodes", i, "data_disks"),
                f"{node.install_disk} is the install disk; it cannot also be a data disk",
            )
        if node.data_disks:
            with_data_disks += 1
        elif bundle.has_linstor:
            yield Finding(
                ("nodes", i, "data_disks"),
                f"node {node.name} has no data disks: it will hold no LINSTOR storage",
                "warning",
            )

    if bundle.hosted or not site.nodes:
        return
    if controlplanes == 0:
        yield Finding(("nodes",), "no node has role controlplane: at least one is required (1, 3 or 5)")
    elif controlplanes not in (1, 3, 5):
        why = (
            "an even count tolerates no more failures than one fewer and can split etcd's vote"
            if controlplanes % 2 == 0
            else "more than 5 etcd members slows every write without adding useful fault tolerance"
        )
        yield Finding(("nodes",), f"{controlplanes} control planes: use 1, 3 or 5 ({why})")
    if bundle.has_linstor and not with_data_disks:
        yield Finding(
            ("nodes",), f"bundle {bundle.name} installs LINSTOR storage but no node lists data_disks"
        )


def _within(ip: netaddr.IPAddress, span: Span | None) -> bool:
    return span is not None and ip.version == span.version and span.first <= int(ip) <= span.last


def _overlaps(a: Span, b: Span) -> bool:
    return a.version == b.version and a.first <= b.last and b.first <= a.last


def _contains(outer: Span, inner: Span) -> bool:
    return outer.version == inner.version and outer.first <= inner.first and inner.last <= outer.last


def _networks(site: Site, nets: Networks, bundle: Bundle) -> Iterator[Finding]:
    mgmt = nets.management
    subnet = mgmt.subnet
    dhcp = mgmt.dhcp.range
    vip = mgmt.vip
    pool = nets.metallb.range if nets.metallb is not None else None
    server = nets.netboot.server if nets.netboot is not None else None
    at = ("networks", "management")

    if not _within(mgmt.gateway, subnet):
        yield Finding((*at, "gateway"), f"gateway {mgmt.gateway} is outside the management subnet {subnet}")
    if dhcp is not None and not _contains(subnet, dhcp):
        yield Finding((*at, "dhcp", "range"), f"DHCP range is outside the management subnet {subnet}")

    node_ips = {n.ip for n in site.nodes}
    if vip is not None:
        if not _within(vip, subnet):
            yield Finding((*at, "vip"), f"VIP {vip} is outside the management subnet {subnet}")
        if vip in node_ips:
            yield Finding(
                (*at, "vip"), f"VIP {vip} is also a node's IP address; the VIP must be a free address"
            )
        if _within(vip, dhcp):
            yield Finding((*at, "vip"), f"VIP {vip} lies inside the DHCP range")
        if vip == mgmt.gateway:
            yield Finding((*at, "vip"), f"VIP {vip} is the gateway address")

    if server is not None:
        path = ("networks", "netboot", "server")
        if not _within(server, subnet) and not any(r.boot_server for r in site.racks):
            yield Finding(path, f"netboot server {server} is outside the management subnet {subnet}")
        if server in node_ips:
            yield Finding(path, f"netboot server {server} is also a node's IP address")
        if server == vip:
            yield Finding(path, "netboot server must not be the control-plane VIP")

    yield from _node_addresses(site, subnet, mgmt.gateway, dhcp, pool)
    if pool is not None:
        yield from _metallb(pool, subnet, dhcp, vip, mgmt.gateway, server)
    elif bundle.metallb and not bundle.hosted:
        yield Finding(
            ("networks",), f"bundle {bundle.name} installs MetalLB: add networks.metallb.range", "warning"
        )
    yield from _cidrs(nets)


def _node_addresses(
    site: Site,
    subnet: netaddr.IPNetwork,
    gateway: netaddr.IPAddress,
    dhcp: netaddr.IPRange | None,
    pool: netaddr.IPRange | None,
) -> Iterator[Finding]:
    reserved = {subnet.network, subnet.broadcast} if subnet.version == 4 and subnet.prefixlen < 31 else set()
    for i, node in enumerate(site.nodes):
        ip = node.ip
        path = ("nodes", i, "ip")
        if not _within(ip, subnet):
            yield Finding(path, f"{ip} is outside the management subnet {subnet}")
        elif ip in reserved:
            yield Finding(path, f"{ip} is the network or broadcast address of {subnet}")
        if ip == gateway:
            yield Finding(path, f"{ip} is the gateway address")
        if _within(ip, dhcp):
            yield Finding(
                path, f"{ip} lies inside the DHCP range; give nodes addresses outside the dynamic pool"
            )
        if _within(ip, pool):
            yield Finding(path, f"{ip} lies inside the MetalLB range; MetalLB would hand it to a service")


def _metallb(
    pool: netaddr.IPRange,
    subnet: netaddr.IPNetwork,
    dhcp: netaddr.IPRange | None,
    vip: netaddr.IPAddress | None,
    gateway: netaddr.IPAddress,
    server: netaddr.IPAddress | None,
) -> Iterator[Finding]:
    path = ("networks", "metallb", "range")
    if not _contains(subnet, pool):
        yield Finding(path, f"MetalLB range is outside the management subnet {subnet}")
    if dhcp is not None and _overlaps(pool, dhcp):
        yield Finding(path, "MetalLB range overlaps the DHCP range")
    if vip is not None and _within(vip, pool):
        yield Finding(path, f"MetalLB range contains the VIP {vip}")
    if _within(gateway, pool):
        yield Finding(path, f"MetalLB range contains the gateway {gateway}")
    if server is not None and _within(server, pool):
        yield Finding(path, f"MetalLB range contains the netboot server {server}")


def _cidrs(nets: Networks) -> Iterator[Finding]:
    """Pod, service, join and management networks must be pairwise disjoint (4 networks: 6 pairs)."""
    named = [
        ("management", ("networks", "management", "subnet"), nets.management.subnet),
        ("pod", ("networks", "pod_cidr"), nets.pod_cidr),
        ("service", ("networks", "service_cidr"), nets.service_cidr),
        ("join", ("networks", "join_cidr"), nets.join_cidr),
    ]
    for b, (name_b, path_b, net_b) in enumerate(named):
        for name_a, _, net_a in named[:b]:
            if _overlaps(net_a, net_b):
                yield Finding(path_b, f"{name_b} network {net_b} overlaps the {name_a} network {net_a}")
    if not _within(nets.pod_gateway, nets.pod_cidr):
        yield Finding(
            ("networks", "pod_gateway"), f"pod gateway {nets.pod_gateway} is outside pod_cidr {nets.pod_cidr}"
        )


# -- the Cozystack platform inputs (owned by the platform stage, provisioner/cozystack/)
def _platform(site: Site, bundle: Bundle) -> Iterator[Finding]:
    """Impossible platform combinations, found before anything is installed."""
    from ..cozystack.releases import V1_VARIANTS, cozystack_major, dangling_dependencies, release_names

    plat = site.platform
    version = site.cluster.cozystack_version
    try:
        major = cozystack_major(version)
    except ValueError as exc:
        yield Finding(("cluster", "cozystack_version"), str(exc))
        return
    if major not in (0, 1):
        yield Finding(("cluster", "cozystack_version"), f"Cozystack {version} is unsupported (v0.x or v1.x)")
        return
    if major == 1 and bundle.name not in V1_VARIANTS:
        alternatives = ", ".join(f"bundle {b} (variant {v})" for b, v in V1_VARIANTS.items())
        yield Finding(
            ("cluster", "cozystack_version"),
            f"bundle {bundle.name} has no variant in Cozystack {version}: use {alternatives} with {version}, "
            f"or keep {bundle.name} with cozystack_version v0.41.11",
        )
    if bundle.has_multitenancy:
        from .tenants import tree_for

        serving = [n.namespace for n in tree_for(site).walk() if n.spec.ingress]
        if plat.expose_ingress not in serving:
            yield Finding(
                ("platform", "expose_ingress"),
                f"{plat.expose_ingress!r} is not a tenant namespace that runs an ingress "
                f"(tenants with ingress: {', '.join(serving) or 'none'})",
            )
    if plat.expose_external_ips and site.networks is not None and site.networks.metallb is not None:
        yield Finding(
            ("platform", "expose_external_ips"),
            "choose one way to publish the ingress: networks.metallb.range or platform.expose_external_ips",
        )
    if major == 1:
        for i, name in enumerate([*plat.bundle_enable, *plat.bundle_disable]):
            key = "bundle_enable" if i < len(plat.bundle_enable) else "bundle_disable"
            idx = i if key == "bundle_enable" else i - len(plat.bundle_enable)
            if not name.startswith("cozystack."):
                yield Finding(
                    ("platform", key, idx),
                    f"Cozystack v1.x enables and disables packages: {name!r} must be a package name "
                    f"like cozystack.{name}",
                )
        return
    known = release_names(bundle.name)
    optional = set(_optional(bundle.name))
    what = f"a release of bundle {bundle.name}"
    for i, name in enumerate(plat.bundle_enable):
        if name not in known:
            yield _unknown(("platform", "bundle_enable", i), name, known, what, sorted(optional))
        elif name not in optional:
            yield Finding(
                ("platform", "bundle_enable", i),
                f"{name!r} is installed by bundle {bundle.name} anyway; only optional releases can be "
                f"enabled ({', '.join(sorted(optional)) or 'none'})",
            )
    for i, name in enumerate(plat.bundle_disable):
        if name not in known:
            yield _unknown(("platform", "bundle_disable", i), name, known, what, [])
    for name in plat.values:
        if name not in known:
            yield _unknown(("platform", "values", name), name, known, what, [])
    enable = [n for n in plat.bundle_enable if n in known]
    disable = [n for n in plat.bundle_disable if n in known]
    for rel, missing in dangling_dependencies(bundle.name, enable, disable, plat.oidc_enabled).items():
        names = ", ".join(m.split("/", 1)[1] for m in missing)
        yield Finding(
            ("platform", "bundle_enable"),
            f"release {rel} depends on {names}, which this configuration does not install: "
            f"add {names} to bundle_enable, or remove {rel.split('/', 1)[1]}",
        )


def _unknown(path: FieldPath, name: str, known: set[str], what: str, choices: list[str]) -> Finding:
    from difflib import get_close_matches

    hint = get_close_matches(name, sorted(known), n=1)
    if hint:
        more = f"; did you mean {hint[0]!r}?"
    else:
        more = f" (choose from {', '.join(choices)})" if choices else ""
    return Finding(path, f"{name!r} is not {what}{more}")


def _optional(bundle: str) -> list[str]:
    from ..cozystack.releases import optional_names

    return optional_names(bundle)
