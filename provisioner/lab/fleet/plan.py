"""The fleet's plan: which simulated machine gets which addresses, and the inventory that matches.

Everything lives in 127.0.0.0/8 inside the fleet's private network namespace (see ``harness``):
node ``i`` answers its Talos API on ``127.1.<i // 250>.<i % 250 + 1>``, its IPMI BMC listens on
``127.2.<i // 250>.<i % 250 + 1>:<10000 + i>``, Redfish BMCs share the emulator address (one port each, as
virtual BMCs do), and the netboot service is on 127.0.0.1. The plan is plain data: it is pickled to
the BMC emulator processes, where the machines behind the BMCs are built from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..machine import MachineSpec

NETBOOT_SERVER = "127.0.0.1"
NETBOOT_PORT = 8080
VIP = "127.0.0.10"
RACK_SIZE = 40
TALOS_VERSION = "v1.11.6"
PASSWORD_FILE = "bmc-password"


@dataclass(frozen=True)
class Delays:
    """Simulated durations, in seconds (zero: as fast as the code allows)."""

    bmc_latency: float = 0.0  # per BMC round trip (IPMI datagram, Redfish request)
    boot: float = 0.0  # power-on -> the netboot client asks for its iPXE script
    install: float = 0.0  # config fetched -> installed OS answering over mutual TLS
    etcd_join: float = 0.0  # bootstrap -> a control plane is a voting etcd member


@dataclass(frozen=True)
class FleetPlan:
    nodes: int
    workdir: Path
    controlplanes: int = 3
    redfish_every: int = 4  # every n-th node has a Redfish BMC, the others IPMI; 0: IPMI only
    delays: Delays = Delays()

    def __post_init__(self) -> None:
        if self.nodes < self.controlplanes or self.controlplanes < 1:
            raise ValueError(f"a fleet needs at least {max(self.controlplanes, 1)} nodes")
        if self.nodes > 250 * 250:
            raise ValueError("at most 62,500 simulated nodes fit the address plan")

    # --- per node ---------------------------------------------------------------------
    def name(self, i: int) -> str:
        return f"cp{i + 1}" if i < self.controlplanes else f"w{i - self.controlplanes + 1:05d}"

    def index(self, name: str) -> int:
        return int(name[2:]) - 1 if name.startswith("cp") else int(name[1:]) + self.controlplanes - 1

    def node_ip(self, i: int) -> str:
        return f"127.1.{i // 250}.{i % 250 + 1}"

    def bmc_ip(self, i: int) -> str:
        return f"127.2.{i // 250}.{i % 250 + 1}"

    def bmc_port(self, i: int) -> int:
        """A port of its own as well: pyghmi's BMC emulator tells its sessions apart by client
        address and BMC port, so two BMCs of one process on the same port would share sessions."""
        return 10000 + i

    def mac(self, i: int) -> str:
        return f"52:54:00:f1:{i // 256:02x}:{i % 256:02x}"

    def uuid(self, i: int) -> str:
        return f"f1ee7000-0000-4000-8000-{i:012d}"

    def is_redfish(self, i: int) -> bool:
        return self.redfish_every > 0 and i % self.redfish_every == self.redfish_every - 1

    def role(self, i: int) -> str:
        return "controlplane" if i < self.controlplanes else "worker"

    def machine(self, i: int) -> MachineSpec:
        return MachineSpec(name=self.name(i), uuid=self.uuid(i), serial=f"FLEET{i:05d}", macs=(self.mac(i),))

    # --- files --------------------------------------------------------------------------
    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory.yaml"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state" / "fleet"

    @property
    def assets_root(self) -> Path:
        return self.workdir / "state" / "assets"

    @property
    def etcd_file(self) -> Path:
        """The simulated etcd cluster every control plane stand-in shares (see ``cluster``)."""
        return self.workdir / "etcd.json"

    def write_inventory(self, bmc_ports: dict[str, tuple[str, str, int]], ca_file: Path | None) -> Path:
        """The inventory `up` runs on; ``bmc_ports``: node -> (protocol, address, port) of its BMC."""
        nodes: list[dict[str, Any]] = []
        for i in range(self.nodes):
            name = self.name(i)
            protocol, address, port = bmc_ports[name]
            bmc: dict[str, Any] = {
                "protocol": protocol,
                "address": address,
                "port": port,
                "username": "admin",
                "password": f"file:{PASSWORD_FILE}",
            }
            if protocol == "ipmi":
                bmc["cipher_suite"] = 3  # what pyghmi's BMC emulator offers
            else:
                bmc["system_id"] = name
                if ca_file is not None:
                    bmc["ca_file"] = str(ca_file)
            nodes.append(
                {
                    "name": name,
                    "rack": f"r{i // RACK_SIZE:03d}",
                    "role": self.role(i),
                    "bmc": bmc,
                    "boot": {"mode": "uefi", "mac": self.mac(i)},
                    "uuid": self.uuid(i),
                    "serial": f"FLEET{i:05d}",
                    "ip": self.node_ip(i),
                    "install_disk": "/dev/sda",
                    "data_disks": ["/dev/sdb"],
                }
            )
        doc = {
            "cluster": {
                "name": "fleet",
                "bundle": "distro-full",
                "state_dir": str(self.state_dir),
                "talos": {"version": TALOS_VERSION, "config_delivery": "url"},
                "timeouts": {"boot": 300, "install": 300, "etcd": 300, "boot_retries": 1},
            },
            "networks": {
                "management": {"subnet": "127.0.0.0/8", "gateway": "127.0.0.1", "vip": VIP},
                "netboot": {"server": NETBOOT_SERVER, "http_port": NETBOOT_PORT, "interface": "lo"},
            },
            "racks": [{"name": f"r{r:03d}"} for r in range(-(-self.nodes // RACK_SIZE))],
            "nodes": nodes,
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = "# Generated by provisioner.lab.fleet (simulated machines, stand-ins): do not edit.\n"
        self.inventory.write_text(text + yaml.dump(doc, Dumper=yaml.CSafeDumper, sort_keys=False))
        return self.inventory

    def write_password(self, password: str) -> None:
        path = self.workdir / PASSWORD_FILE
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password)
