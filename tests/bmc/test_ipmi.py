"""IPMI driver + controller against the pyghmi-based BMC emulator, checked with ipmitool."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ipmi_client
import pytest

from provisioner.bmc import BMCAuthError, BMCCommandError, BootDevice, PowerState, connect
from provisioner.bmc.controller import ControllerSettings
from provisioner.lab.bmc_fleet import BmcFleet

from .conftest import PASSWORD, machine, make_node

FAST = ControllerSettings(
    command_timeout=5,
    attempts=3,
    backoff_initial=0.05,
    backoff_max=0.2,
    verify_timeout=2,
    boot_verify_timeout=1,
)


def ipmitool(fleet: BmcFleet, name: str, *args: str) -> str:
    ep = fleet.endpoints[name]
    return ipmi_client.ipmitool(ep.address, ep.port, "admin", PASSWORD, *args)


def test_power_on_off_confirmed_by_ipmitool(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "ipmi1", 1), secrets_dir, FAST) as ctl:
        ctl.power_on()
        assert "Chassis Power is on" in ipmitool(fleet, "ipmi1", "chassis", "power", "status")
        assert ctl.power_state() is PowerState.ON
        ctl.power_off()
        assert "Chassis Power is off" in ipmitool(fleet, "ipmi1", "chassis", "power", "status")
        assert ctl.power_state() is PowerState.OFF


def test_boot_flags_follow_the_ipmi_spec(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "ipmi2", 2), secrets_dir, FAST) as ctl:
        ctl.set_boot_device(BootDevice.PXE)  # node boot.mode is uefi: EFI bit, next boot only
        out = ipmitool(fleet, "ipmi2", "chassis", "bootparam", "get", "5")
        assert "Force PXE" in out
        assert "Options apply to only next boot" in out
        assert "BIOS EFI boot" in out
        ctl.set_boot_device(BootDevice.DISK, persistent=True, uefi=False)
        out = ipmitool(fleet, "ipmi2", "chassis", "bootparam", "get", "5")
        assert "Force Boot from default Hard-Drive" in out
        assert "Options apply to all future boots" in out
        assert "BIOS PC Compatible (legacy) boot" in out


def test_one_time_pxe_is_used_by_the_next_power_on_only(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "ipmi3", 3), secrets_dir, FAST) as ctl:
        ctl.power_off()
        ctl.set_boot_device(BootDevice.DISK, persistent=True)
        ctl.set_boot_device(BootDevice.PXE)
        ctl.power_on()
        state = fleet.state("ipmi3")
        assert state["powered"] is True
        assert state["boots"][-1] == {"device": "pxe", "uefi": True}
        assert state["boot"] == {"device": "disk", "persistent": True, "uefi": True}
        ctl.power_cycle()
        assert fleet.state("ipmi3")["boots"][-1]["device"] == "disk"


def test_power_cycle_of_an_off_node_powers_it_on(fleet: BmcFleet, secrets_dir: Path) -> None:
    with connect(make_node(fleet, "ipmi1", 1), secrets_dir, FAST) as ctl:
        ctl.power_off()
        ctl.power_cycle()
        assert "Chassis Power is on" in ipmitool(fleet, "ipmi1", "chassis", "power", "status")


def test_identity_reports_the_smbios_uuid(fleet: BmcFleet, secrets_dir: Path) -> None:
    node = make_node(fleet, "ipmi2", 2)
    with connect(node, secrets_dir, FAST) as ctl:
        assert ctl.identity().uuid == node.uuid
    assert node.uuid in ipmitool(fleet, "ipmi2", "mc", "guid")


def test_identity_reports_serial_vendor_and_model_from_the_fru(fleet: BmcFleet, secrets_dir: Path) -> None:
    node = make_node(fleet, "ipmi3", 3)
    spec = machine(3, "ipmi3")
    with connect(node, secrets_dir, FAST) as ctl:
        ident = ctl.identity()
    assert (ident.uuid, ident.serial, ident.vendor, ident.model) == (
        node.uuid,
        node.serial,
        spec.vendor,
        spec.model,
    )
    assert ident.serial == "SER-0003"
    # The FRU data is in the standard format: ipmitool reads the same fields.
    fru = ipmitool(fleet, "ipmi3", "fru", "print", "0")
    assert "Product Serial        : SER-0003" in fru
    assert f"Product Manufacturer  : {spec.vendor}" in fru
    assert f"Product Name          : {spec.model}" in fru


def test_wrong_password_fails_fast_without_retries_or_leaking(
    fleet: BmcFleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "bmc-password").write_text("not-the-password-x1")
    caplog.set_level(logging.DEBUG)
    with connect(make_node(fleet, "ipmi1", 1), tmp_path, FAST) as ctl, pytest.raises(BMCAuthError) as err:
        ctl.power_state()
    assert "ipmi1" in str(err.value) and fleet.endpoints["ipmi1"].port.__str__() in str(err.value)
    assert "not-the-password-x1" not in str(err.value)
    assert "not-the-password-x1" not in caplog.text
    assert "retrying" not in caplog.text


def test_cipher_suite_default_falls_back_to_3_and_explicit_17_is_refused(
    fleet: BmcFleet, secrets_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The pyghmi-based BMC answers a suite-17 proposal with suite-3 algorithms.
    with caplog.at_level(logging.WARNING), connect(make_node(fleet, "ipmi1", 1), secrets_dir, FAST) as ctl:
        assert ctl.power_state() in (PowerState.ON, PowerState.OFF)
    downgrades = [r.getMessage() for r in caplog.records if "fell back to suite 3" in r.getMessage()]
    assert [r.levelno for r in caplog.records if "fell back to suite 3" in r.getMessage()] == [
        logging.WARNING
    ]
    assert "node ipmi1" in downgrades[0]
    caplog.clear()
    with connect(make_node(fleet, "ipmi1", 1, cipher_suite=3), secrets_dir, FAST) as ctl:
        assert ctl.power_state() in (PowerState.ON, PowerState.OFF)
    assert "fell back" not in caplog.text  # an explicit suite 3 is no downgrade
    with (
        connect(make_node(fleet, "ipmi1", 1, cipher_suite=17), secrets_dir, FAST) as ctl,
        pytest.raises(BMCCommandError, match="cipher suite 17"),
    ):
        ctl.power_state()


def test_a_new_login_does_not_cut_off_other_sessions(fleet: BmcFleet, secrets_dir: Path) -> None:
    # pyghmi's client multiplexes BMC sessions over one UDP port; a reconnect to one BMC
    # from that port used to make the emulator drop every session of the port, so the
    # other node's next command went unanswered until the command timeout.
    settings = ControllerSettings(command_timeout=3, attempts=1)
    with connect(make_node(fleet, "ipmi2", 2), secrets_dir, settings) as other:
        other.power_state()
        for _ in range(3):
            with connect(make_node(fleet, "ipmi1", 1), secrets_dir, settings) as ctl:
                ctl.power_state()
            start = time.monotonic()
            other.power_state()
            assert time.monotonic() - start < 1.0


def test_a_session_keeps_time_without_the_process_cpu_clock(
    fleet: BmcFleet, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyghmi times its waits with ``os.times()``, a system call that walks every thread of the
    process; the driver gives it ``time.monotonic``. A log-in, commands and a log-out must not
    read the CPU clock once (pyghmi's own clock read it 97 times for these)."""
    calls = 0
    real_times = os.times

    def counting_times() -> os.times_result:
        nonlocal calls
        calls += 1
        return real_times()

    monkeypatch.setattr(os, "times", counting_times)
    with connect(make_node(fleet, "ipmi1", 1), secrets_dir, FAST) as ctl:
        ctl.power_on()
        assert ctl.power_state() is PowerState.ON
        ctl.set_boot_device(BootDevice.PXE)
    assert calls == 0
