"""Every object the platform stage applies, built from the validated site as plain dicts.

One builder per object, all pure: the same site gives byte-identical objects, which is what
makes a rerun a no-op (the apply layer compares them with what is live). Shapes follow the
Cozystack docs and upstream manifests cited in ``upstream/notes/`` (section numbers below).
"""

from __future__ import annotations

from typing import Any

import yaml

from ..inventory.model import PoolType, Site
from ..tenants import TenantNode, tree_for
from .releases import V1_VARIANTS

Obj = dict[str, Any]

FIELD_MANAGER = "provisioner"
SYSTEM_NAMESPACE = "cozy-system"
METALLB_NAMESPACE = "cozy-metallb"
PACKAGE_NAME = "cozystack.cozystack-platform"
# Our own satellite configurations; never one of Cozystack's four (Flux owns those names).
LSC_PREFIX = "provisioner-storage-"
_COZY_DEFAULTS = {
    "pod_cidr": "10.244.0.0/16",
    "pod_gateway": "10.244.0.1",
    "service_cidr": "10.96.0.0/16",
    "join_cidr": "100.64.0.0/16",
}


def _networks(site: Site) -> dict[str, str]:
    """Pod/service/join networks: the inventory's, or Cozystack's defaults on a hosted cluster."""
    n = site.networks
    if n is None:
        return dict(_COZY_DEFAULTS)
    return {
        "pod_cidr": str(n.pod_cidr),
        "pod_gateway": str(n.pod_gateway),
        "service_cidr": str(n.service_cidr),
        "join_cidr": str(n.join_cidr),
    }


def bundle_disable(site: Site) -> list[str]:
    """The operator's list, plus metallb when the ingress is published on external IPs instead
    (the Cozystack docs' advice, so MetalLB never competes for the same Service)."""
    out = list(site.platform.bundle_disable)
    if site.platform.expose_external_ips and site.cluster.bundle_spec.metallb and "metallb" not in out:
        out.append("metallb")
    return out


# -- v0.x contract: namespace, ConfigMap, installer (notes: platform-install.md §1)
def system_namespace() -> Obj:
    """``cozy-system`` with the labels the v0.41 installer manifest gives it (§1.2)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": SYSTEM_NAMESPACE,
            "labels": {"cozystack.io/system": "true", "pod-security.kubernetes.io/enforce": "privileged"},
        },
    }


def configmap(site: Site) -> Obj:
    """ConfigMap ``cozy-system/cozystack``: every key derived from the inventory (§1.3)."""
    plat = site.platform
    nets = _networks(site)
    data: dict[str, str] = {"bundle-name": site.cluster.bundle.value}
    if site.cluster.root_host:
        data["root-host"] = site.cluster.root_host
    if site.api_endpoint:
        data["api-server-endpoint"] = site.api_endpoint
    data.update(
        {
            "ipv4-pod-cidr": nets["pod_cidr"],
            "ipv4-pod-gateway": nets["pod_gateway"],
            "ipv4-svc-cidr": nets["service_cidr"],
            "ipv4-join-cidr": nets["join_cidr"],
            "cluster-domain": site.cluster.cluster_domain,
            "expose-services": ",".join(plat.expose_services),
            "expose-ingress": plat.expose_ingress,
            "oidc-enabled": "true" if plat.oidc_enabled else "false",
            "telemetry-enabled": "true" if plat.telemetry_enabled else "false",
        }
    )
    if plat.expose_external_ips:
        data["expose-external-ips"] = ",".join(str(ip) for ip in plat.expose_external_ips)
    if plat.bundle_enable:
        data["bundle-enable"] = ",".join(plat.bundle_enable)
    disable = bundle_disable(site)
    if disable:
        data["bundle-disable"] = ",".join(disable)
    for name, values in sorted(plat.values.items()):
        data[f"values-{name}"] = yaml.safe_dump(values, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cozystack", "namespace": SYSTEM_NAMESPACE},
        "data": data,
    }


def api_host_port(endpoint: str) -> tuple[str, str]:
    """``https://host:port`` -> (host, port); the port defaults to 443 like an https URL."""
    rest = endpoint.removeprefix("https://").rstrip("/")
    if rest.startswith("["):  # IPv6 literal
        host, _, port = rest[1:].partition("]")
        return host, port.lstrip(":") or "443"
    host, _, port = rest.partition(":")
    return host, port or "443"


def point_installer_at(docs: list[Obj], endpoint: str) -> list[Obj]:
    """Replace the installer's KubePrism address (``localhost:7445``) by the real API endpoint.

    Required on a hosted, non-Talos cluster: there is no KubePrism there and the installer (or
    v1 operator) would never reach the API (Cozystack docs, "Installing on non-Talos OS", §1.2).
    Returns new objects; the input is left alone.
    """
    host, port = api_host_port(endpoint)
    out: list[Obj] = []
    for doc in docs:
        doc = yaml.safe_load(yaml.safe_dump(doc))  # deep copy
        if doc.get("kind") == "Deployment":
            for c in doc["spec"]["template"]["spec"].get("containers", []):
                for env in c.get("env", []):
                    if env.get("name") == "KUBERNETES_SERVICE_HOST":
                        env["value"] = host
                    elif env.get("name") == "KUBERNETES_SERVICE_PORT":
                        env["value"] = port
        out.append(doc)
    return out


# -- v1.x contract: the platform Package (§7.3)
def platform_package(site: Site) -> Obj:
    """Package ``cozystack.cozystack-platform`` with the variant and values of this site."""
    plat = site.platform
    nets = _networks(site)
    publishing: dict[str, Any] = {
        "exposedServices": list(plat.expose_services),
        "ingressName": plat.expose_ingress,
    }
    if site.cluster.root_host:
        publishing["host"] = site.cluster.root_host
    if site.api_endpoint:
        publishing["apiServerEndpoint"] = site.api_endpoint
    if plat.expose_external_ips:
        publishing["externalIPs"] = [str(ip) for ip in plat.expose_external_ips]
    values: dict[str, Any] = {
        "networking": {
            "podCIDR": nets["pod_cidr"],
            "podGateway": nets["pod_gateway"],
            "serviceCIDR": nets["service_cidr"],
            "joinCIDR": nets["join_cidr"],
            "clusterDomain": site.cluster.cluster_domain,
        },
        "publishing": publishing,
    }
    bundles: dict[str, Any] = {}
    if plat.bundle_enable:
        bundles["enabledPackages"] = list(plat.bundle_enable)
    if plat.bundle_disable:
        bundles["disabledPackages"] = list(plat.bundle_disable)
    if bundles:
        values["bundles"] = bundles
    if plat.oidc_enabled:
        values["authentication"] = {"oidc": {"enabled": True}}
    return {
        "apiVersion": "cozystack.io/v1alpha1",
        "kind": "Package",
        "metadata": {"name": PACKAGE_NAME},
        "spec": {
            "variant": V1_VARIANTS[site.cluster.bundle.value],
            "components": {"platform": {"values": values}},
        },
    }


# -- storage (piraeus.md §3; platform-install.md §4.2)
def storage_nodes(site: Site) -> list[str]:
    return [n.name for n in site.nodes if n.data_disks]


def satellite_configurations(site: Site) -> list[Obj]:
    """One LinstorSatelliteConfiguration per node with data disks, selected to that node only
    (devices differ per node: the piraeus maintainers' advice, issue #526)."""
    store = site.platform.storage
    pool_type: dict[str, Any]
    if store.pool_type is PoolType.ZFS:
        pool_type = {"zfsPool": {"zPool": store.pool_name}}
    else:
        pool_type = {"lvmThinPool": {"volumeGroup": store.pool_name, "thinPool": store.pool_name}}
    out = []
    for node in site.nodes:
        if not node.data_disks:
            continue
        pool = {"name": store.pool_name, **pool_type, "source": {"hostDevices": list(node.data_disks)}}
        out.append(
            {
                "apiVersion": "piraeus.io/v1",
                "kind": "LinstorSatelliteConfiguration",
                "metadata": {"name": f"{LSC_PREFIX}{node.name}"},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": node.name}, "storagePools": [pool]},
            }
        )
    return out


def autoplace(site: Site) -> int:
    return max(1, min(3, len(storage_nodes(site))))


_DRBD = "property.linstor.csi.linbit.com/DrbdOptions"


def storage_classes(site: Site) -> list[Obj]:
    """``local`` (default, WaitForFirstConsumer) and ``replicated`` (DRBD, Immediate), as documented."""
    pool = site.platform.storage.pool_name
    local = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "linstor.csi.linbit.com",
        "parameters": {
            "linstor.csi.linbit.com/storagePool": pool,
            "linstor.csi.linbit.com/layerList": "storage",
            "linstor.csi.linbit.com/allowRemoteVolumeAccess": "false",
        },
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }
    replicated = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "replicated"},
        "provisioner": "linstor.csi.linbit.com",
        "parameters": {
            "linstor.csi.linbit.com/storagePool": pool,
            "linstor.csi.linbit.com/autoPlace": str(autoplace(site)),
            "linstor.csi.linbit.com/layerList": "drbd storage",
            "linstor.csi.linbit.com/allowRemoteVolumeAccess": "true",
            f"{_DRBD}/auto-quorum": "suspend-io",
            f"{_DRBD}/Resource/on-no-data-accessible": "suspend-io",
            f"{_DRBD}/Resource/on-suspended-primary-outdated": "force-secondary",
            f"{_DRBD}/Net/rr-conflict": "retry-connect",
        },
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }
    return [local, replicated]


# -- networking (platform-install.md §5.1)
def metallb_objects(site: Site) -> list[Obj]:
    """IPAddressPool + L2Advertisement ``cozystack`` in ``cozy-metallb``; none without a range."""
    if site.networks is None or site.networks.metallb is None:
        return []
    rng = site.networks.metallb.range
    return [
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": "cozystack", "namespace": METALLB_NAMESPACE},
            "spec": {"addresses": [f"{rng[0]}-{rng[-1]}"], "autoAssign": True, "avoidBuggyIPs": False},
        },
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": "cozystack", "namespace": METALLB_NAMESPACE},
            "spec": {"ipAddressPools": ["cozystack"]},
        },
    ]


# -- tenants (platform-install.md §6)
def tenant_spec(node: TenantNode, v1: bool) -> Obj:
    """The Tenant spec for one tree node; ``host`` empty lets Cozystack derive ``<name>.<parent>``."""
    spec = node.spec
    out: Obj = {
        "host": node.host if node.parent is None else (spec.host or ""),
        "etcd": spec.etcd,
        "ingress": spec.ingress,
        "monitoring": spec.monitoring,
        "seaweedfs": spec.seaweedfs,
        "resourceQuotas": dict(spec.resource_quotas),
    }
    if not v1:  # v1.6.2's tenant schema dropped `isolated`
        out["isolated"] = spec.isolated
    if out["host"] is None:
        out["host"] = ""
    return out


def tenant_objects(site: Site, v1: bool = False) -> list[Obj]:
    """Tenant ``root`` in tenant-root, then every child in its parent's namespace, parents first."""
    out = []
    for node in tree_for(site).walk():
        namespace = node.parent.namespace if node.parent else "tenant-root"
        out.append(
            {
                "apiVersion": "apps.cozystack.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": node.name, "namespace": namespace},
                "spec": tenant_spec(node, v1),
            }
        )
    return out
