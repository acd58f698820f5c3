"""Each protocol owns its settings (registry): cipher suites, Redfish over http, unknown keys.

Every rejection is checked through the real CLI: a located message and exit code 2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.bmc import IpmiSettings, RedfishSettings, registry
from provisioner.bmc.registry import DriverRequest
from provisioner.cli import main
from provisioner.inventory import load_inventory


def _site(tmp_path: Path, bmc: dict[str, Any]) -> Path:
    doc = {
        "cluster": {"name": "t", "bundle": "distro-full"},
        "networks": {
            "management": {"subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "vip": "10.9.0.10"},
            "metallb": {"range": "10.9.0.100-10.9.0.150"},
            "netboot": {"server": "10.9.0.5"},
        },
        "nodes": [
            {
                "name": "n1",
                "rack": "r1",
                "role": "controlplane",
                "bmc": {"address": "10.9.1.1", "username": "admin", "password": "env:BMC_PW", **bmc},
                "boot": {"mac": "52:54:00:09:00:01"},
                "ip": "10.9.0.11",
                "data_disks": ["/dev/sdb"],
            }
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], bmc: dict[str, Any]) -> tuple[int, str]:
    code = main(["-i", str(_site(tmp_path, bmc)), "validate"])
    return code, capsys.readouterr().err


def test_cipher_suite_0_is_rejected_with_its_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _validate(tmp_path, capsys, {"protocol": "ipmi", "cipher_suite": 0})
    assert code == 2
    assert "nodes[0].bmc.cipher_suite: cipher suite 0 is not allowed" in err
    assert "site.yaml:" in err and "Traceback" not in err


@pytest.mark.parametrize("suite", [3, 17])
def test_cipher_suites_3_and_17_are_accepted(tmp_path: Path, suite: int) -> None:
    bmc = load_inventory(_site(tmp_path, {"protocol": "ipmi", "cipher_suite": suite})).site.nodes[0].bmc
    assert isinstance(bmc, IpmiSettings) and bmc.cipher_suite == suite and bmc.effective_port == 623


def test_redfish_over_http_is_refused_without_consent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _validate(tmp_path, capsys, {"protocol": "redfish", "scheme": "http"})
    assert code == 2
    assert "nodes[0].bmc: scheme http sends the BMC user and password in clear" in err
    assert "allow_insecure_http: true" in err


def test_redfish_over_http_with_consent_warns_that_credentials_go_in_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = _site(tmp_path, {"protocol": "redfish", "scheme": "http", "allow_insecure_http": True})
    bmc = load_inventory(path).site.nodes[0].bmc
    assert isinstance(bmc, RedfishSettings) and bmc.effective_port == 80
    monkeypatch.setenv("BMC_PW", "pw")
    req = DriverRequest("n1", bmc, "pw", tmp_path, 1.0)
    with caplog.at_level(logging.WARNING):
        driver = registry.lookup("redfish").factory(req)
    driver.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("n1" in w and "in clear" in w for w in warnings), warnings


def test_options_of_another_protocol_are_unknown_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _validate(tmp_path, capsys, {"protocol": "ipmi", "ca_file": "ca.pem"})
    assert code == 2 and "nodes[0].bmc.ca_file: unknown key 'ca_file'" in err
    code, err = _validate(tmp_path, capsys, {"protocol": "redfish", "cipher_suite": 3})
    assert code == 2 and "nodes[0].bmc.cipher_suite: unknown key 'cipher_suite'" in err


def test_unknown_or_missing_protocol_is_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _validate(tmp_path, capsys, {"protocol": "snmp"})
    assert code == 2 and "nodes[0].bmc.protocol: unknown BMC protocol 'snmp' (known: ipmi, redfish)" in err
    code, err = _validate(tmp_path, capsys, {})
    assert code == 2 and "nodes[0].bmc.protocol: required field is missing" in err
