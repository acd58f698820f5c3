"""Semantic checks on rendered machine configs, run on every generation.

Each rule is one that broke a real install: a VIP or ``kubelet.nodeIP.validSubnets`` /
``etcd.advertisedSubnets`` outside the nodes' real subnet (etcd and kubelet pick no
address, bootstrap hangs), an API endpoint host missing from the API server certificate
(clients refuse the VIP), CA keys on workers, and control planes with different CAs
(a patch replaced one). They read the final documents, after every user patch, and
report field paths only, never values that could be secret.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

import netaddr

from ..inventory.model import Node, Role
from .patches import Document
from .secrets import SecretsBundle


def _get(doc: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _b64_pem(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value.startswith("LS0tLS1CRUdJTi"):  # base64 of "-----BEGIN"
        return None
    try:
        return base64.b64decode(value)
    except (binascii.Error, ValueError):
        return None


def _addresses(docs: list[Document]) -> tuple[list[netaddr.IPNetwork], list[str]]:
    """Addresses configured on links and the VIPs, from either config contract."""
    addrs: list[netaddr.IPNetwork] = []
    vips: list[str] = []
    for dev in _get(docs[0], "machine", "network", "interfaces") or []:
        if isinstance(dev, dict):
            addrs += [netaddr.IPNetwork(a) for a in dev.get("addresses") or [] if isinstance(a, str)]
            vip = _get(dev, "vip", "ip")
            if vip:
                vips.append(str(vip))
    for doc in docs[1:]:
        if doc.get("kind") == "LinkConfig":
            addrs += [netaddr.IPNetwork(a["address"]) for a in doc.get("addresses") or []
                      if isinstance(a, dict) and isinstance(a.get("address"), str)]
        elif doc.get("kind") == "Layer2VIPConfig" and doc.get("name"):
            vips.append(str(doc["name"]))
    return addrs, vips


def _in_any(ip: netaddr.IPAddress, subnets: Iterable[Any]) -> bool:
    for s in subnets:
        try:
            if ip in netaddr.IPNetwork(str(s).lstrip("!")) and not str(s).startswith("!"):
                return True
        except (netaddr.AddrFormatError, ValueError):
            continue
    return False


def check_node_config(node: Node, docs: list[Document], secrets: SecretsBundle, vip: str | None) -> list[str]:
    """Problems with one node's final documents, as ``<node>: <field>: <what>`` lines."""
    problems: list[str] = []
    say = problems.append
    main = docs[0]
    ip = node.ip
    addrs, vips = _addresses(docs)

    if not any(a.ip == ip for a in addrs):
        say(f"{node.name}: the node address {ip} is not configured on any link")
    valid = _get(main, "machine", "kubelet", "nodeIP", "validSubnets") or []
    if not _in_any(ip, valid):
        say(f"{node.name}: machine.kubelet.nodeIP.validSubnets does not contain the node address {ip}")

    is_cp = node.role is Role.CONTROLPLANE
    if is_cp:
        advertised = _get(main, "cluster", "etcd", "advertisedSubnets") or []
        if not _in_any(ip, advertised):
            say(f"{node.name}: cluster.etcd.advertisedSubnets does not contain the node address {ip}")
        if vip is not None and vip not in vips:
            say(f"{node.name}: the control-plane VIP {vip} is not configured on the node's interface")
        endpoint = _get(main, "cluster", "controlPlane", "endpoint")
        host = urlparse(endpoint).hostname if isinstance(endpoint, str) else None
        sans = _get(main, "cluster", "apiServer", "certSANs") or []
        if host is None:
            say(f"{node.name}: cluster.controlPlane.endpoint is missing or not a URL")
        elif host not in [str(s) for s in sans]:
            say(f"{node.name}: cluster.apiServer.certSANs lacks the control-plane endpoint host {host}")
    for v in vips:
        v_ip = netaddr.IPAddress(v)
        if not any(v_ip in a for a in addrs):
            say(f"{node.name}: the VIP {v} is outside the subnet of the node's addresses "
                f"({', '.join(str(a.cidr) for a in addrs) or 'none'})")
        if not is_cp:
            say(f"{node.name}: a worker must not carry the control-plane VIP {v}")

    if not is_cp:
        for path in _private_keys(main):
            say(f"{node.name}: worker config carries private key material at {path}")

    problems += _ca_problems(node.name, main, secrets, is_cp)
    return problems


def _private_keys(doc: Any, path: str = "") -> list[str]:
    """Paths of every base64 PEM private key in the document (workers must have none)."""
    found: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _private_keys(v, f"{path}.{k}" if path else str(k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _private_keys(v, f"{path}[{i}]")
    else:
        pem = _b64_pem(doc)
        if pem is not None and b"PRIVATE KEY" in pem.split(b"\n", 1)[0]:
            found.append(path)
    return found


def _ca_problems(name: str, main: Document, secrets: SecretsBundle, is_cp: bool) -> list[str]:
    """Every node must embed the bundle's CAs (so all control planes share one set)."""
    from .pki import b64

    expected: list[tuple[tuple[str, ...], bytes | None]] = [
        (("machine", "ca", "crt"), secrets.os.crt),
        (("cluster", "ca", "crt"), secrets.k8s.crt),
    ]
    if is_cp:
        expected += [
            (("machine", "ca", "key"), secrets.os.key),
            (("cluster", "ca", "key"), secrets.k8s.key),
            (("cluster", "aggregatorCA", "crt"), secrets.k8s_aggregator.crt),
            (("cluster", "aggregatorCA", "key"), secrets.k8s_aggregator.key),
            (("cluster", "serviceAccount", "key"), secrets.k8s_service_account.key),
            (("cluster", "etcd", "ca", "crt"), secrets.etcd.crt),
            (("cluster", "etcd", "ca", "key"), secrets.etcd.key),
        ]
    out = []
    for path, want in expected:
        if want is None or _get(main, *path) != b64(want):
            out.append(f"{name}: {'.'.join(path)} differs from the cluster secrets bundle "
                       "(every control plane must share one set of CAs)")
    return out
