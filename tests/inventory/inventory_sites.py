"""Small valid inventories for the inventory tests, as data to tweak and write."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml


def node(i: int, role: str = "worker", rack: str = "r1", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": f"n{i}",
        "rack": rack,
        "role": role,
        "bmc": {
            "protocol": "ipmi",
            "address": f"10.9.1.{i}",
            "username": "admin",
            "password": "env:BMC_PASSWORD",
        },
        "boot": {"mode": "uefi", "mac": f"52:54:00:09:00:{i:02x}"},
        "ip": f"10.9.0.{i}",
        "data_disks": ["/dev/sdb"],
    }
    data.update(extra)
    return data


BASE: dict[str, Any] = {
    "cluster": {"name": "t", "bundle": "paas-full", "root_host": "t.example.com"},
    "networks": {
        "management": {
            "subnet": "10.9.0.0/24",
            "gateway": "10.9.0.1",
            "vip": "10.9.0.10",
            "dhcp": {"range": "10.9.0.200-10.9.0.250"},
        },
        "metallb": {"range": "10.9.0.100-10.9.0.150"},
        "netboot": {"server": "10.9.0.5"},
    },
    "racks": [{"name": "r1"}, {"name": "r2"}],
    "nodes": [
        node(11, "controlplane"),
        node(12, "controlplane", "r2"),
        node(13, "controlplane"),
        node(21, rack="r2"),
    ],
}


def site(**sections: Any) -> dict[str, Any]:
    """A deep copy of BASE with whole sections replaced (``None`` removes one)."""
    data = copy.deepcopy(BASE)
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path
