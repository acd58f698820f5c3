"""``/config`` hands out cluster keys: only under URL delivery, only to the node's own
address, only until the node is recorded installed, and never on a guess about a record
that cannot be read. Through the real server on loopback."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from netboot_sites import make_site

from provisioner.events import CONFIG_DENIED, CONFIG_FETCH, IPXE_SCRIPT, EventLog
from provisioner.inventory.model import Site
from provisioner.netboot.assets import asset_set
from provisioner.netboot.service import NetbootService
from provisioner.state import StateStore

CP1_UUID = "7ab0c7b2-0c1d-4a4e-9d1a-000000000001"
CONFIG = b"version: v1alpha1\n# cp1 keys would be here\n"


def _get(address: tuple[str, int], path: str, source: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=10, source_address=(source, 0))
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def _serve(site: Site, tmp_path: Path) -> NetbootService:
    root = tmp_path / "assets"
    d = asset_set(site, root).directory
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel-amd64").write_bytes(b"K" * 100)
    (d / "initramfs-amd64.xz").write_bytes(b"I" * 100)
    configs = site.state_dir / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "cp1.yaml").write_bytes(CONFIG)
    store = StateStore(site.state_dir)
    return NetbootService(
        site,
        store,
        EventLog(store.events_path),
        assets_root=root,
        http_host="127.0.0.1",
        http_port=0,
        dhcp=False,
    )


def test_apply_delivery_never_serves_a_config(tmp_path: Path) -> None:
    site = make_site(tmp_path / "state", config_delivery="apply")
    with _serve(site, tmp_path) as svc:
        status, body = _get(svc.http_address, f"/config?uuid={CP1_UUID}", "127.0.0.11")  # cp1's own address
    assert status == 403 and CONFIG not in body
    events = EventLog(StateStore(site.state_dir).events_path).read()
    denied = [e for e in events if e.kind == CONFIG_DENIED]
    assert [(e.node, e.outcome) for e in denied] == [("cp1", "denied")]
    assert "config delivery is apply" in denied[0].data["reason"]
    assert not [e for e in events if e.kind == CONFIG_FETCH]


def test_url_delivery_serves_the_own_address_until_installed(tmp_path: Path) -> None:
    site = make_site(tmp_path / "state")
    store = StateStore(site.state_dir)
    with _serve(site, tmp_path) as svc:
        assert _get(svc.http_address, f"/config?uuid={CP1_UUID}", "127.0.0.11") == (200, CONFIG)
        status, body = _get(svc.http_address, f"/config?uuid={CP1_UUID}", "127.0.0.13")  # w1's address
        assert status == 403 and CONFIG not in body
        store.update("cp1", installed=True)  # recorded while the service runs
        status, body = _get(svc.http_address, f"/config?uuid={CP1_UUID}", "127.0.0.11")
        assert status == 403 and CONFIG not in body
    reasons = [e.data["reason"] for e in EventLog(store.events_path).read() if e.kind == CONFIG_DENIED]
    assert reasons == ["request from a foreign address", "installed"]


@pytest.mark.parametrize("record", [b"{not json", b'{"phase": "installed-ish"}', b"\xff\xfe"])
def test_an_unreadable_record_gets_no_config_and_no_install(tmp_path: Path, record: bytes) -> None:
    site = make_site(tmp_path / "state")
    store = StateStore(site.state_dir)
    store.nodes_dir.mkdir(parents=True)
    (store.nodes_dir / "cp1.json").write_bytes(record)
    with _serve(site, tmp_path) as svc:
        status, body = _get(svc.http_address, f"/config?uuid={CP1_UUID}", "127.0.0.11")
        assert status == 403 and CONFIG not in body
        status, script = _get(svc.http_address, "/node.ipxe?mac=52-54-00-aa-00-01", "127.0.0.11")
    assert status == 200 and b"sanboot" in script and b"kernel " not in script  # boots its disk
    events = EventLog(store.events_path).read()
    assert any(e.kind == CONFIG_DENIED and "unreadable" in e.data["reason"] for e in events)
    assert any(e.kind == IPXE_SCRIPT and e.outcome == "local-disk" for e in events)
    assert (store.nodes_dir / "cp1.json").read_bytes() == record  # left for the operator, not reset
