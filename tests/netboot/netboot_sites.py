"""Sites for the netboot tests, built directly from the model (no inventory file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.inventory.model import Site


def make_site(
    state_dir: Path,
    server: str = "127.0.0.1",
    subnet: str = "127.0.0.0/8",
    gateway: str = "127.0.0.1",
    nodes: list[dict[str, Any]] | None = None,
    port: int = 8080,
    interface: str | None = None,
    dhcp: dict[str, Any] | None = None,
    **talos: Any,
) -> Site:
    if nodes is None:
        nodes = [
            {
                "name": "cp1",
                "rack": "r1",
                "role": "controlplane",
                "boot": {"mode": "bios", "mac": "52:54:00:aa:00:01"},
                "uuid": "7ab0c7b2-0c1d-4a4e-9d1a-000000000001",
                "serial": "SER 1",
                "ip": "127.0.0.11",
            },
            {
                "name": "cp2",
                "rack": "r1",
                "role": "controlplane",
                "boot": {"mode": "uefi", "mac": "52:54:00:aa:00:02"},
                "uuid": "7ab0c7b2-0c1d-4a4e-9d1a-000000000002",
                "ip": "127.0.0.12",
            },
            {
                "name": "w1",
                "rack": "r2",
                "role": "worker",
                "boot": {"mac": "52:54:00:aa:00:03"},
                "ip": "127.0.0.13",
            },
        ]
    netboot: dict[str, Any] = {"server": server, "http_port": port}
    if interface:
        netboot["interface"] = interface
    return Site.model_validate(
        {
            "cluster": {
                "name": "t",
                "bundle": "distro-full",
                "state_dir": str(state_dir),
                "talos": {"version": "v1.11.6", **talos},
            },
            "networks": {
                "management": {
                    "subnet": subnet,
                    "gateway": gateway,
                    "dns": [gateway],
                    **({"dhcp": dhcp} if dhcp else {}),
                },
                "netboot": netboot,
            },
            "racks": [{"name": "r1"}, {"name": "r2"}],
            "nodes": nodes,
        }
    )


def write_inventory(
    directory: Path,
    server: str,
    subnet: str,
    gateway: str,
    nodes: list[dict[str, Any]],
    port: int,
    interface: str | None = None,
) -> Path:
    """An inventory file the real loader accepts (for CLI tests)."""
    import yaml

    netboot: dict[str, Any] = {"server": server, "http_port": port}
    if interface:
        netboot["interface"] = interface
    doc = {
        "cluster": {"name": "nbtest", "bundle": "distro-full", "state_dir": str(directory / "state")},
        "networks": {"management": {"subnet": subnet, "gateway": gateway}, "netboot": netboot},
        "racks": [{"name": "r1"}, {"name": "r2"}],
        "nodes": [
            {
                "data_disks": ["/dev/vdb"],
                "bmc": {
                    "protocol": "ipmi",
                    "address": "127.0.0.1",
                    "port": 6230 + i,
                    "username": "admin",
                    "password": "env:NETBOOT_TEST_BMC_PASSWORD",
                },
                **n,
            }
            for i, n in enumerate(nodes)
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
