"""Small inventories for the platform tests: one per bundle, as data to tweak and load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from provisioner.inventory import Inventory, load_inventory


def _node(i: int, role: str, disks: list[str]) -> dict[str, Any]:
    return {
        "name": f"n{i}",
        "rack": "r1",
        "role": role,
        "bmc": {"protocol": "ipmi", "address": f"10.9.1.{i}", "username": "a", "password": "env:BMC_PW"},
        "boot": {"mac": f"52:54:00:09:00:{i:02x}"},
        "ip": f"10.9.0.{i}",
        "data_disks": disks,
    }


FULL: dict[str, Any] = {
    "cluster": {"name": "t", "bundle": "paas-full", "root_host": "t.example.com"},
    "networks": {
        "management": {"subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "vip": "10.9.0.10"},
        "metallb": {"range": "10.9.0.100-10.9.0.150"},
        "netboot": {"server": "10.9.0.5"},
    },
    "racks": [{"name": "r1"}],
    "nodes": [
        _node(11, "controlplane", ["/dev/sdb"]),
        _node(12, "controlplane", ["/dev/sdb", "/dev/sdc"]),
        _node(13, "controlplane", ["/dev/sdb"]),
        _node(21, "worker", ["/dev/nvme0n1"]),
    ],
    "tenants": {"root": {"children": {"team": {"ingress": True, "children": {"dev": {}}}}}},
}

HOSTED: dict[str, Any] = {
    "cluster": {
        "name": "h",
        "bundle": "paas-hosted",
        "root_host": "h.example.com",
        "api_server_endpoint": "https://203.0.113.5:6443",
    },
    "hosted": {"kubeconfig": "kubeconfig"},
}


def data(bundle: str = "paas-full", **sections: Any) -> dict[str, Any]:
    """A deep copy of the full or hosted inventory for ``bundle``, sections replaced (None removes)."""
    base = copy.deepcopy(HOSTED if bundle.endswith("-hosted") else FULL)
    base["cluster"]["bundle"] = bundle
    if not bundle.startswith("paas"):
        base.pop("tenants", None)
    for key, value in sections.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def load(tmp_path: Path, doc: dict[str, Any]) -> Inventory:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_inventory(path)


BUNDLES = ("paas-full", "paas-hosted", "distro-full", "distro-hosted")
