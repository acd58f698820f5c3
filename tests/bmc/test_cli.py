"""``provisioner power|bootdev|bmc identify`` against the emulators, through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.cli import main
from provisioner.lab.bmc_fleet import BmcFleet

from .conftest import PASSWORD, make_node


def write_inventory(
    tmp_path: Path, fleet: BmcFleet, secrets_dir: Path, wrong_uuid: bool = False, wrong_serial: bool = False
) -> Path:
    shutil.copy(secrets_dir / "bmc-password", tmp_path / "bmc-password")
    nodes = []
    for name, i, rack in (("ipmi2", 2, "r1"), ("rf1", 11, "r2")):
        n: dict[str, Any] = json.loads(make_node(fleet, name, i, rack=rack).model_dump_json())
        n["bmc"] = {k: v for k, v in n["bmc"].items() if v is not None}
        n["role"] = "controlplane" if name == "ipmi2" else "worker"
        n["data_disks"] = ["/dev/sdb"]
        n["ip"] = f"10.0.0.{i + 10}"
        if wrong_uuid and name == "rf1":
            n["uuid"] = "7ab0c7b2-0c1d-4a4e-9d1a-999999999999"
        if wrong_serial and name == "ipmi2":
            n["serial"] = "SER-9999"
        nodes.append(n)
    inv = {
        "cluster": {"name": "t", "bundle": "distro-full"},
        "racks": [{"name": "r1"}, {"name": "r2"}],
        "networks": {
            "management": {"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "vip": "10.0.0.5"},
            "netboot": {"server": "10.0.0.2"},
        },
        "nodes": nodes,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


def test_power_and_bootdev_commands(
    fleet: BmcFleet, secrets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path, fleet, secrets_dir)
    assert main(["-i", str(inv), "power", "on"]) == 0
    assert fleet.state("ipmi2")["powered"] and fleet.state("rf1")["powered"]
    assert main(["-i", str(inv), "--node", "rf1", "power", "off"]) == 0
    assert not fleet.state("rf1")["powered"] and fleet.state("ipmi2")["powered"]
    capsys.readouterr()
    assert main(["-i", str(inv), "-o", "json", "power", "status"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["node"]: r["value"] for r in data["results"]} == {"ipmi2": "on", "rf1": "off"}
    assert main(["-i", str(inv), "--rack", "r1", "bootdev", "disk", "--persistent"]) == 0
    assert fleet.state("ipmi2")["boot"] == {"device": "disk", "persistent": True, "uefi": True}
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err


def test_identify_reports_a_wrong_uuid(
    fleet: BmcFleet, secrets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path, fleet, secrets_dir, wrong_uuid=True)
    assert main(["-i", str(inv), "bmc", "identify"]) == 1
    out = capsys.readouterr().out
    assert "ipmi2" in out and "rf1" in out
    rf1_line = next(line for line in out.splitlines() if line.startswith("rf1"))
    assert "FAILED" in rf1_line and "UUID is 7ab0c7b2-0c1d-4a4e-9d1a-000000000011" in rf1_line
    ipmi_line = next(line for line in out.splitlines() if line.startswith("ipmi2"))
    assert " ok " in ipmi_line


def test_identify_checks_the_serial_over_ipmi_too(
    fleet: BmcFleet, secrets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path, fleet, secrets_dir, wrong_serial=True)
    assert main(["-i", str(inv), "bmc", "identify"]) == 1
    out = capsys.readouterr().out
    ipmi_line = next(line for line in out.splitlines() if line.startswith("ipmi2"))
    assert "FAILED" in ipmi_line and "serial is SER-0002, inventory says SER-9999" in ipmi_line
    rf1_line = next(line for line in out.splitlines() if line.startswith("rf1"))
    assert " ok " in rf1_line
    capsys.readouterr()
    inv = write_inventory(tmp_path, fleet, secrets_dir)
    assert main(["-i", str(inv), "-o", "json", "bmc", "identify"]) == 0
    data = json.loads(capsys.readouterr().out)
    ipmi = next(r["value"] for r in data["results"] if r["node"] == "ipmi2")
    assert ipmi["serial"] == "SER-0002" and ipmi["vendor"] and ipmi["model"]
