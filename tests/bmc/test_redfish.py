"""Redfish driver + controller against the sushy-tools emulator, checked with raw HTTPS GETs."""

from __future__ import annotations

import base64
import json
import logging
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from provisioner.bmc import BMCAuthError, BMCConfigError, BootDevice, PowerState, connect, redfish
from provisioner.bmc.controller import ControllerSettings
from provisioner.lab.bmc_fleet import BmcFleet

from .conftest import PASSWORD, make_node

FAST = ControllerSettings(
    command_timeout=5,
    attempts=3,
    backoff_initial=0.05,
    backoff_max=0.2,
    verify_timeout=2,
    boot_verify_timeout=1,
)


def get_system(fleet: BmcFleet, name: str) -> dict[str, Any]:
    """An independent raw GET of the ComputerSystem (no sushy involved)."""
    ep = fleet.endpoints[name]
    ctx = ssl.create_default_context(cafile=str(fleet.ca_file))
    req = urllib.request.Request(f"https://{ep.address}:{ep.port}/redfish/v1/Systems/{name}")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode())
    with urllib.request.urlopen(req, context=ctx, timeout=10) as rsp:
        return json.load(rsp)  # type: ignore[no-any-return]


def test_power_on_off_confirmed_by_http_get(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "rf1", 11), secrets_dir, FAST) as ctl:
        ctl.power_on()
        assert get_system(fleet, "rf1")["PowerState"] == "On"
        assert ctl.power_state() is PowerState.ON
        ctl.power_off()
        assert get_system(fleet, "rf1")["PowerState"] == "Off"


def test_boot_override_once_continuous_uefi_legacy(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "rf1", 11), secrets_dir, FAST) as ctl:
        ctl.set_boot_device(BootDevice.PXE)
        boot = get_system(fleet, "rf1")["Boot"]
        assert (
            boot["BootSourceOverrideTarget"],
            boot["BootSourceOverrideEnabled"],
            boot["BootSourceOverrideMode"],
        ) == ("Pxe", "Once", "UEFI")
        ctl.set_boot_device(BootDevice.DISK, persistent=True, uefi=False)
        boot = get_system(fleet, "rf1")["Boot"]
        assert (
            boot["BootSourceOverrideTarget"],
            boot["BootSourceOverrideEnabled"],
            boot["BootSourceOverrideMode"],
        ) == ("Hdd", "Continuous", "Legacy")


def test_one_time_pxe_is_consumed_by_power_on(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "rf1", 11), secrets_dir, FAST) as ctl:
        ctl.power_off()
        ctl.set_boot_device(BootDevice.DISK, persistent=True)
        ctl.set_boot_device(BootDevice.PXE)
        ctl.power_on()
    assert fleet.state("rf1")["boots"][-1]["device"] == "pxe"
    assert get_system(fleet, "rf1")["Boot"]["BootSourceOverrideTarget"] == "Hdd"


def test_system_chosen_by_system_id_or_uuid_on_a_multi_system_bmc(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "rf3", 13, system_id="rf3"), secrets_dir, FAST) as ctl:
        ctl.power_on()
    assert get_system(fleet, "rf3")["PowerState"] == "On"
    assert get_system(fleet, "rf2")["PowerState"] == "Off"
    with connect(make_node(fleet, "rf2", 12), secrets_dir, FAST) as ctl:  # by the inventory UUID
        assert ctl.identity().uuid == make_node(fleet, "rf2", 12).uuid
    node = make_node(fleet, "rf2", 12).model_copy(update={"uuid": None})
    with connect(node, secrets_dir, FAST) as ctl, pytest.raises(BMCConfigError, match="system_id"):
        ctl.power_state()


def test_identity_reports_serial_vendor_model_and_macs(fleet: BmcFleet, secrets_dir: Path) -> None:
    node = make_node(fleet, "rf1", 11)
    with connect(node, secrets_dir, FAST) as ctl:
        ident = ctl.identity()
    assert ident.uuid == node.uuid
    assert ident.serial == node.serial
    assert ident.vendor and ident.model
    assert node.boot.mac in ident.macs and len(ident.macs) == 2


def test_self_signed_certificate_refused_without_ca(fleet: BmcFleet, secrets_dir: Path) -> None:
    node = make_node(fleet, "rf1", 11, ca_file=None)
    with connect(node, secrets_dir, FAST) as ctl, pytest.raises(BMCConfigError, match="ca_file") as err:
        ctl.power_state()
    assert "TLS" in str(err.value)


def test_verification_disabled_works_with_a_warning(
    fleet: BmcFleet, secrets_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    node = make_node(fleet, "rf1", 11, ca_file=None, verify_tls=False)
    with connect(node, secrets_dir, FAST) as ctl:
        assert ctl.power_state() in (PowerState.ON, PowerState.OFF)
    assert "TLS verification" in caplog.text and "disabled" in caplog.text


def test_wrong_password_is_an_auth_error_without_the_password(fleet: BmcFleet, tmp_path: Path) -> None:
    (tmp_path / "bmc-password").write_text("wrong-secret-42")
    with connect(make_node(fleet, "rf1", 11), tmp_path, FAST) as ctl, pytest.raises(BMCAuthError) as err:
        ctl.power_state()
    assert "rf1" in str(err.value) and "wrong-secret-42" not in str(err.value)


def _redfish_requests(fleet: BmcFleet) -> int:
    return fleet.stats_by_protocol()["redfish"]["requests"]


@pytest.mark.parametrize(("system_id", "discovery"), [("rf1", 0), (None, 2)])
def test_round_trips_are_the_protocol_minimum_once_the_system_is_known(
    fleet: BmcFleet, secrets_dir: Path, system_id: str | None, discovery: int
) -> None:
    """Off + PXE once + on on one connection: the service root, then 2 per verified operation (+ the
    Systems collection and the system, once per process, when found by UUID); a later connection for
    the disk step: the root, the PATCH and its read-back, nothing rediscovered."""
    redfish._KNOWN.clear()
    extra = {"system_id": system_id} if system_id else {}
    node = make_node(fleet, "rf1", 11, **extra)
    before = _redfish_requests(fleet)
    with connect(node, secrets_dir, FAST) as ctl:
        ctl.power_off()
        ctl.set_boot_device(BootDevice.PXE)
        ctl.power_on()
    assert _redfish_requests(fleet) - before == 1 + 3 * 2 + discovery
    before = _redfish_requests(fleet)
    with connect(node, secrets_dir, FAST) as ctl:
        ctl.set_boot_device(BootDevice.DISK, persistent=True)
    assert _redfish_requests(fleet) - before == 1 + 2
    assert get_system(fleet, "rf1")["Boot"]["BootSourceOverrideTarget"] == "Hdd"
    assert fleet.state("rf1")["boots"][-1]["device"] == "pxe"


def test_a_system_no_longer_where_it_was_learnt_is_found_again(fleet: BmcFleet, secrets_dir: Path) -> None:
    """A learnt URI that now answers 404 (the BMC changed) is forgotten and the step retried."""
    node = make_node(fleet, "rf2", 12)
    with connect(node, secrets_dir, FAST) as ctl:
        ctl.power_off()
    key = next(k for k in redfish._KNOWN if k[2] == node.uuid)
    known = redfish._KNOWN[key]
    redfish._KNOWN[key] = redfish._Known(known.path.replace("rf2", "gone"), known.doc)
    with connect(node, secrets_dir, FAST) as ctl:
        ctl.power_on()
    assert get_system(fleet, "rf2")["PowerState"] == "On"
    assert redfish._KNOWN[key].path == known.path
