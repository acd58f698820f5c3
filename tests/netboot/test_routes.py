"""The netboot endpoints through the real server on loopback: every node state of the
iPXE endpoint, machine-config delivery and denial, assets, and the events written."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

import pytest
from netboot_sites import make_site

from provisioner.events import (
    ASSET_DOWNLOAD,
    CONFIG_DENIED,
    CONFIG_FETCH,
    IPXE_SCRIPT,
    IPXE_UNKNOWN,
    EventLog,
)
from provisioner.inventory.model import Site
from provisioner.netboot.assets import asset_set
from provisioner.netboot.service import NetbootService
from provisioner.state import StateStore


class Client:
    """HTTP from a chosen loopback source address (127/8 is all local on Linux)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    def get(self, path: str, source: str = "127.0.0.1", method: str = "GET") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.address, timeout=10, source_address=(source, 0))
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, body


@pytest.fixture
def assets_root(site: Site, tmp_path: Path) -> Path:
    root = tmp_path / "assets"
    d = asset_set(site, root).directory
    d.mkdir(parents=True)
    (d / "kernel-amd64").write_bytes(b"K" * 1000)
    (d / "initramfs-amd64.xz").write_bytes(b"I" * 5000)
    return root


@pytest.fixture
def svc(site: Site, store: StateStore, events: EventLog, assets_root: Path):
    service = NetbootService(
        site, store, events, assets_root=assets_root, http_host="127.0.0.1", http_port=0, dhcp=False
    )
    with service:
        yield service


@pytest.fixture
def client(svc: NetbootService) -> Client:
    return Client(svc.http_address)


def last(events: EventLog, kind: str):
    matching = [e for e in events.read() if e.kind == kind]
    assert matching, f"no {kind} event"
    return matching[-1]


def test_boot_ipxe_chains_with_identity(client: Client, svc: NetbootService) -> None:
    status, body = client.get("/boot.ipxe")
    text = body.decode()
    assert status == 200 and text.startswith("#!ipxe\n")
    port = svc.http_address[1]
    assert (
        f"http://127.0.0.1:{port}/node.ipxe?uuid=${{uuid}}&mac=${{mac:hexhyp}}&serial=${{serial:uristring}}"
        in text
    )


def test_node_to_install_by_mac(client: Client, events: EventLog, svc: NetbootService) -> None:
    status, body = client.get("/node.ipxe?uuid=&mac=52-54-00-aa-00-01&serial=x", source="127.0.0.11")
    text = body.decode()
    assert status == 200
    port = svc.http_address[1]
    assert f"kernel http://127.0.0.1:{port}/assets/kernel-amd64 " in text
    assert f"initrd http://127.0.0.1:{port}/assets/initramfs-amd64.xz" in text
    for arg in (
        "talos.platform=metal",
        "slab_nomerge",
        "pti=on",
        "init_on_alloc=1",
        "init_on_free=1",
        "console=tty0",
        "printk.devkmsg=on",
    ):
        assert f" {arg}" in text
    assert f"talos.config=http://127.0.0.1:{port}/config?uuid=${{uuid}}" in text
    ev = last(events, IPXE_SCRIPT)
    assert (ev.node, ev.outcome, ev.data["mac"], ev.data["ip"]) == (
        "cp1",
        "install",
        "52:54:00:aa:00:01",
        "127.0.0.11",
    )


def test_node_matched_by_uuid_only(client: Client, events: EventLog) -> None:
    status, body = client.get("/node.ipxe?uuid=7AB0C7B2-0C1D-4A4E-9D1A-000000000002&mac=00-00-00-00-00-99")
    assert status == 200 and b"kernel " in body
    assert last(events, IPXE_SCRIPT).node == "cp2"


def test_installed_node_boots_from_disk(client: Client, store: StateStore, events: EventLog) -> None:
    store.update("cp1", installed=True)
    status, body = client.get("/node.ipxe?mac=52-54-00-aa-00-01&uuid=")
    text = body.decode()
    assert status == 200
    assert "sanboot --no-describe --drive 0x80" in text and "exit" in text
    assert "kernel " not in text and "talos.config" not in text
    ev = last(events, IPXE_SCRIPT)
    assert (ev.node, ev.outcome) == ("cp1", "local-disk")


def test_unknown_machine_404_and_event(client: Client, events: EventLog) -> None:
    status, _ = client.get(
        "/node.ipxe?uuid=11111111-2222-3333-4444-555555555555&mac=de-ad-be-ef-00-01&serial=Z",
        source="127.0.0.99",
    )
    assert status == 404
    ev = last(events, IPXE_UNKNOWN)
    assert ev.node is None and ev.outcome == "unknown"
    assert ev.data["mac"] == "de:ad:be:ef:00:01"
    assert ev.data["uuid"] == "11111111-2222-3333-4444-555555555555"
    assert ev.data["ip"] == "127.0.0.99"


def test_missing_assets_503(site: Site, store: StateStore, events: EventLog, tmp_path: Path) -> None:
    with NetbootService(
        site, store, events, assets_root=tmp_path / "empty", http_host="127.0.0.1", http_port=0, dhcp=False
    ) as svc:
        status, body = Client(svc.http_address).get("/node.ipxe?mac=52-54-00-aa-00-01")
    assert status == 503 and b"kernel-amd64" in body
    assert last(events, IPXE_SCRIPT).outcome == "error"


def test_node_outside_selection_boots_from_disk(
    site: Site, store: StateStore, events: EventLog, assets_root: Path
) -> None:
    only_w1 = [site.node("w1")]
    with NetbootService(
        site, store, events, only_w1, assets_root=assets_root, http_host="127.0.0.1", http_port=0, dhcp=False
    ) as svc:
        c = Client(svc.http_address)
        assert b"sanboot" in c.get("/node.ipxe?mac=52-54-00-aa-00-01")[1]
        assert b"kernel " in c.get("/node.ipxe?mac=52-54-00-aa-00-03")[1]
        assert c.get("/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000001", source="127.0.0.11")[0] == 403


def _write_config(site: Site, name: str, text: str) -> None:
    d = site.state_dir / "configs"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.yaml").write_text(text)


def test_config_served_to_own_address(client: Client, site: Site, events: EventLog) -> None:
    _write_config(site, "cp1", "version: v1alpha1\n# cp1\n")
    status, body = client.get("/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000001", source="127.0.0.11")
    assert status == 200 and body == b"version: v1alpha1\n# cp1\n"
    ev = last(events, CONFIG_FETCH)
    assert (ev.node, ev.outcome, ev.data["ip"]) == ("cp1", "ok", "127.0.0.11")


def test_config_read_at_request_time(client: Client, site: Site) -> None:
    _write_config(site, "cp1", "first\n")
    assert (
        client.get("/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000001", source="127.0.0.11")[1] == b"first\n"
    )
    _write_config(site, "cp1", "second\n")
    assert (
        client.get("/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000001", source="127.0.0.11")[1] == b"second\n"
    )


def test_config_by_address_when_inventory_has_no_uuid(client: Client, site: Site) -> None:
    _write_config(site, "w1", "w1 config\n")
    assert client.get("/config?uuid=99999999-0000-0000-0000-000000000000", source="127.0.0.13") == (
        200,
        b"w1 config\n",
    )


def test_config_from_foreign_address_403(client: Client, site: Site, events: EventLog) -> None:
    _write_config(site, "cp1", "secret-ish\n")
    status, body = client.get("/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000001", source="127.0.0.12")
    assert status == 403 and b"secret-ish" not in body
    ev = last(events, CONFIG_DENIED)
    assert (ev.node, ev.outcome, ev.data["ip"]) == ("cp1", "denied", "127.0.0.12")
    assert not [e for e in events.read() if e.kind == CONFIG_FETCH]


def test_config_unknown_uuid_and_address_403(client: Client, events: EventLog) -> None:
    status, _ = client.get("/config?uuid=99999999-0000-0000-0000-000000000000", source="127.0.0.50")
    assert status == 403
    assert last(events, CONFIG_DENIED).outcome == "unknown"


def test_config_uuid_mismatch_403(client: Client, site: Site) -> None:
    _write_config(site, "cp2", "cp2\n")
    # from cp2's address but claiming a UUID that is not cp2's
    assert client.get("/config?uuid=99999999-0000-0000-0000-000000000000", source="127.0.0.12")[0] == 403


def test_config_refused_once_installed(
    client: Client, site: Site, store: StateStore, events: EventLog
) -> None:
    _write_config(site, "cp1", "cfg\n")
    store.update("cp1", installed=True)
    status, body = client.get("/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000001", source="127.0.0.11")
    assert status == 403 and body != b"cfg\n"
    assert last(events, CONFIG_DENIED).data["reason"] == "installed"


def test_config_missing_404_and_event(client: Client, events: EventLog) -> None:
    status, _ = client.get("/config?uuid=7ab0c7b2-0c1d-4a4e-9d1a-000000000002", source="127.0.0.12")
    assert status == 404
    ev = last(events, CONFIG_FETCH)
    assert (ev.node, ev.outcome) == ("cp2", "missing")


def test_apply_delivery_has_no_config_url(tmp_path: Path, assets_root: Path) -> None:
    site = make_site(tmp_path / "state2", config_delivery="apply")
    store = StateStore(site.state_dir)
    with NetbootService(
        site,
        store,
        EventLog(store.events_path),
        assets_root=assets_root,
        http_host="127.0.0.1",
        http_port=0,
        dhcp=False,
    ) as svc:
        _, body = Client(svc.http_address).get("/node.ipxe?mac=52-54-00-aa-00-01")
    assert b"talos.platform=metal" in body and b"talos.config" not in body


def test_assets_served_with_event(client: Client, events: EventLog) -> None:
    status, body = client.get("/assets/kernel-amd64", source="127.0.0.11")
    assert status == 200 and body == b"K" * 1000
    ev = last(events, ASSET_DOWNLOAD)
    assert (ev.node, ev.data["file"]) == ("cp1", "kernel-amd64")
    assert client.get("/assets/../state/events.jsonl")[0] == 404


def test_reload_switches_selection_without_restart(svc: NetbootService, client: Client, site: Site) -> None:
    assert b"kernel " in client.get("/node.ipxe?mac=52-54-00-aa-00-01")[1]
    svc.reload(nodes=[site.node("w1")])
    assert b"sanboot" in client.get("/node.ipxe?mac=52-54-00-aa-00-01")[1]


def test_http_bind_failure_is_an_operation_error(site: Site, store: StateStore, events: EventLog) -> None:
    from provisioner.errors import ProvisionerError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ProvisionerError, match="cannot listen"):
            NetbootService(site, store, events, http_host="127.0.0.1", http_port=port, dhcp=False).start()
