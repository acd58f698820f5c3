"""Rendered dnsmasq configs: each mode passes the real ``dnsmasq --test``; the lease hook
writes events."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from netboot_sites import make_site

from provisioner.errors import InputError
from provisioner.events import DHCP_LEASE, EventLog
from provisioner.netboot import dnsmasq


def _site(tmp_path: Path, **dhcp: object):
    site = make_site(
        tmp_path / "state",
        server="10.9.0.1",
        subnet="10.9.0.0/24",
        gateway="10.9.0.254",
        interface="eth9",
        nodes=[
            {
                "name": "n1",
                "rack": "r1",
                "role": "controlplane",
                "boot": {"mac": "52:54:00:00:00:01"},
                "ip": "10.9.0.11",
            }
        ],
    )
    if dhcp:
        nets = site.networks.model_copy(
            update={
                "management": site.networks.management.model_copy(
                    update={"dhcp": site.networks.management.dhcp.model_validate(dhcp)}
                )
            }
        )
        site = site.model_copy(update={"networks": nets})
    return site


def test_reservations_mode(tmp_path: Path) -> None:
    paths = dnsmasq.Paths(tmp_path / "rt")
    text = dnsmasq.write_files(_site(tmp_path), paths, tmp_path / "events.jsonl")
    assert "dhcp-host=52:54:00:00:00:01,10.9.0.11,n1,1h" in text
    assert "dhcp-ignore=tag:!known" in text
    assert "dhcp-range=set:reserved,10.9.0.0,static,255.255.255.0,1h" in text
    assert "dhcp-boot=tag:ipxe,http://10.9.0.1:8080/boot.ipxe" in text
    assert "enable-ra" in text and "dhcp-range=::,constructor:eth9,ra-only,64" in text
    assert "port=0" in text
    assert paths.conf.read_text() == text


def test_pool_mode_answers_unknown_machines(tmp_path: Path) -> None:
    text = dnsmasq.write_files(
        _site(tmp_path, range="10.9.0.100-10.9.0.150"), dnsmasq.Paths(tmp_path / "rt"), tmp_path / "e"
    )
    assert "dhcp-range=set:pool,10.9.0.100,10.9.0.150,255.255.255.0,1h" in text
    assert "dhcp-ignore" not in text


def test_proxy_mode(tmp_path: Path) -> None:
    text = dnsmasq.write_files(_site(tmp_path, mode="proxy"), dnsmasq.Paths(tmp_path / "rt"), tmp_path / "e")
    assert "dhcp-range=10.9.0.0,proxy,255.255.255.0" in text
    assert "dhcp-host=52:54:00:00:00:01,set:known" in text
    assert "10.9.0.11" not in text  # the site's DHCP server hands out addresses
    assert "pxe-service=tag:!ipxe,x86PC" in text


def test_dnsmasq_test_rejects_a_bad_config(tmp_path: Path) -> None:
    from provisioner.errors import OperationError

    paths = dnsmasq.Paths(tmp_path / "rt")
    paths.runtime.mkdir()
    with pytest.raises(OperationError, match="dnsmasq --test"):
        dnsmasq.check("dhcp-range=not-an-address\n", paths)


def test_interface_name_cannot_inject(tmp_path: Path) -> None:
    site = _site(tmp_path)
    with pytest.raises(InputError, match="interface"):
        dnsmasq.render(site, dnsmasq.Paths(tmp_path), interface="eth0\ndhcp-script=/bin/evil")


def test_lease_hook_writes_event(tmp_path: Path) -> None:
    paths = dnsmasq.Paths(tmp_path / "rt")
    events = tmp_path / "events.jsonl"
    dnsmasq.write_files(_site(tmp_path), paths, events)
    assert json.loads(paths.node_map.read_text()) == {"52:54:00:00:00:01": "n1"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNSMASQ_")}
    env["DNSMASQ_TAGS"] = "known bios eth9"
    subprocess.run(
        [str(paths.hook), "add", "52:54:00:00:00:01", "10.9.0.11", "n1"], check=True, env=env, timeout=30
    )
    subprocess.run(
        [str(paths.hook), "add", "52:54:00:99:99:99", "10.9.0.120"], check=True, env=env, timeout=30
    )
    evs = [e for e in EventLog(events).read() if e.kind == DHCP_LEASE]
    assert [(e.node, e.outcome, e.data["ip"], e.data["action"]) for e in evs] == [
        ("n1", "ok", "10.9.0.11", "add"),
        (None, "unknown", "10.9.0.120", "add"),
    ]
    assert evs[0].data["tags"] == ["known", "bios", "eth9"]
