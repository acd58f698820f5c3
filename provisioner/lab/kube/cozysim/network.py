"""The tenant-root ingress Service and the address MetalLB gives it; Node readiness behind the CNI.

Facts from ``provisioner/cozystack/upstream/notes/platform-install.md`` §5:

- The ingress of the tenant named by ``expose-ingress`` (default tenant-root) is Service
  ``tenant-root/root-ingress-controller``. With ``expose-external-ips`` set it is ``type: ClusterIP`` with
  those ``externalIPs`` and ``externalTrafficPolicy: Cluster``; otherwise ``type: LoadBalancer`` with
  ``externalTrafficPolicy: Local`` and MetalLB assigns it an address.
- MetalLB: the simulator assigns the first free address of the first ``IPAddressPool`` (oldest
  first, then by namespace/name) with ``autoAssign`` not false; ``addresses`` entries are CIDRs or
  ``first-last`` ranges.

Node readiness (issue item 2): a Node's ``Ready`` condition is False with reason
``NetworkPluginNotReady`` until the CNI release(s) are Ready, then True (``KubeletReady``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

INGRESS_SERVICE = "root-ingress-controller"


def ingress_service(namespace: str, external_ips: tuple[str, ...]) -> dict[str, Any]:
    """The ingress-nginx controller Service of the exposed tenant (packages/extra/ingress)."""
    spec: dict[str, Any] = {
        "selector": {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/instance": "ingress"},
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"},
        ],
    }
    if external_ips:
        spec.update(type="ClusterIP", externalIPs=list(external_ips), externalTrafficPolicy="Cluster")
    else:
        spec.update(type="LoadBalancer", externalTrafficPolicy="Local")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": INGRESS_SERVICE,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "ingress-nginx",
                "app.kubernetes.io/component": "controller",
            },
        },
        "spec": spec,
    }


def _addresses(entry: str) -> Iterator[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    entry = entry.strip()
    if "-" in entry:
        first_text, last_text = (part.strip() for part in entry.split("-", 1))
        first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
        family = type(first)
        if type(last) is not family:
            raise ValueError(f"range {entry!r} mixes address families")
        for number in range(int(first), int(last) + 1):
            yield family(number)
        return
    network = ipaddress.ip_network(entry, strict=False)
    if network.num_addresses == 1:
        yield network.network_address
        return
    yield from network.hosts()


def first_pool(pools: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pool MetalLB would use first for a Service that names none."""
    candidates = [p for p in pools if (p.get("spec") or {}).get("autoAssign", True) is not False]
    candidates.sort(
        key=lambda p: (
            (p.get("metadata") or {}).get("creationTimestamp", ""),
            (p.get("metadata") or {}).get("namespace", ""),
            (p.get("metadata") or {}).get("name", ""),
        )
    )
    return candidates[0] if candidates else None


def allocate(pool: Mapping[str, Any], in_use: set[str]) -> str | None:
    """The first address of ``pool`` not in ``in_use``; None when the pool is exhausted or empty."""
    for entry in (pool.get("spec") or {}).get("addresses") or ():
        try:
            for address in _addresses(str(entry)):
                if str(address) not in in_use:
                    return str(address)
        except ValueError:
            continue  # an entry MetalLB would refuse; the others still serve
    return None


def node_ready_condition(cni_ready: bool, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The Node Ready condition the kubelet reports depending on the CNI."""
    if cni_ready:
        value, reason, message = "True", "KubeletReady", "kubelet is posting ready status"
    else:
        value, reason = "False", "NetworkPluginNotReady"
        message = (
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
            "message:Network plugin returns error: cni plugin not initialized"
        )
    since = (previous or {}).get("lastTransitionTime") if (previous or {}).get("status") == value else now
    return {
        "type": "Ready",
        "status": value,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": (previous or {}).get("lastHeartbeatTime") or now,
        "lastTransitionTime": since or now,
    }
