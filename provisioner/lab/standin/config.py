"""The parts of a v1alpha1 machine config the stand-in acts on.

apid has already checked the shape (version, top-level keys, install disk) with its YAML-free scanner;
here the config is read properly (PyYAML, imported lazily: only once a config exists) into the few
fields the node needs. Errors name the field, never its value (the config holds CA keys).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .backend import InvalidConfig


@dataclass(frozen=True)
class MachineConfig:
    """What the stand-in uses from a machine config. Keys are PEM bytes; ``raw`` is the config as applied."""

    raw: bytes = field(repr=False)
    machine_type: str
    os_ca_crt: bytes
    os_ca_key: bytes | None = field(repr=False)
    token: str = field(repr=False)
    install_disk: str | None
    hostname: str | None
    vip: str | None
    endpoint: str
    cluster_name: str
    k8s_ca_crt: bytes | None
    k8s_ca_key: bytes | None = field(repr=False)
    etcd_extra_args: tuple[tuple[str, str], ...] = ()  # cluster.etcd.extraArgs, passed to etcd as flags

    @property
    def control_plane(self) -> bool:
        return self.machine_type in ("controlplane", "init")

    @property
    def endpoint_host(self) -> str:
        return urllib.parse.urlsplit(self.endpoint).hostname or ""


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _pem(doc: dict[str, Any], path: str, required: bool) -> bytes | None:
    value = _get(doc, path)
    if value in (None, ""):
        if required:
            raise InvalidConfig(f"machine config: {path} is missing")
        return None
    try:
        data = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidConfig(f"machine config: {path} is not base64") from None
    if b"-----BEGIN" not in data:
        raise InvalidConfig(f"machine config: {path} does not hold a PEM block")
    return data


def _vip(doc: dict[str, Any]) -> str | None:
    for iface in _get(doc, "machine.network.interfaces") or []:
        ip = _get(iface, "vip.ip") if isinstance(iface, dict) else None
        if ip:
            return str(ip)
    return None


_ETCD_OWNED_FLAGS = frozenset(
    {"name", "data-dir", "advertise-client-urls", "initial-advertise-peer-urls", "logger", "log-outputs"}
)


def parse(data: bytes) -> MachineConfig:
    """Read ``data`` (first v1alpha1 document); InvalidConfig names the missing or bad field."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(data) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidConfig(f"machine config is not valid YAML{where}") from None
    doc = next((d for d in docs if d.get("version") == "v1alpha1"), None)
    if doc is None:
        raise InvalidConfig("not a v1alpha1 machine config: no document with version: v1alpha1")
    mtype = str(_get(doc, "machine.type") or "")
    if mtype not in ("controlplane", "init", "worker"):
        raise InvalidConfig("machine config: machine.type must be controlplane or worker")
    endpoint = str(_get(doc, "cluster.controlPlane.endpoint") or "")
    if not urllib.parse.urlsplit(endpoint).hostname:
        raise InvalidConfig(
            "machine config: cluster.controlPlane.endpoint must be a URL like https://VIP:6443"
        )
    control_plane = mtype != "worker"
    vip = _vip(doc)
    if vip is not None:
        try:
            ipaddress.ip_address(vip)
        except ValueError:
            raise InvalidConfig(
                "machine config: machine.network.interfaces[].vip.ip is not an IP address"
            ) from None
    token = str(_get(doc, "machine.token") or "")
    if not token:
        raise InvalidConfig("machine config: machine.token is missing")
    os_ca_crt = _pem(doc, "machine.ca.crt", True)
    assert os_ca_crt is not None
    extra = _get(doc, "cluster.etcd.extraArgs") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool) for k, v in extra.items()
    ):
        raise InvalidConfig("machine config: cluster.etcd.extraArgs must map flag names to strings")
    owned = sorted(k for k in extra if k in _ETCD_OWNED_FLAGS or k.startswith(("listen-", "initial-")))
    if owned:
        raise InvalidConfig(
            f"machine config: cluster.etcd.extraArgs may not set {', '.join(owned)} (Talos sets it)"
        )
    return MachineConfig(
        raw=data,
        etcd_extra_args=tuple(sorted((k, str(v)) for k, v in extra.items())),
        machine_type=mtype,
        os_ca_crt=os_ca_crt,
        os_ca_key=_pem(doc, "machine.ca.key", control_plane),
        token=token,
        install_disk=_get(doc, "machine.install.disk") or None,
        hostname=_get(doc, "machine.network.hostname") or None,
        vip=vip,
        endpoint=endpoint,
        cluster_name=str(_get(doc, "cluster.clusterName") or "talos"),
        k8s_ca_crt=_pem(doc, "cluster.ca.crt", False),
        k8s_ca_key=_pem(doc, "cluster.ca.key", False),
    )
