"""Schematic ids, and assets fetched from an Image Factory stand-in on loopback or imported."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from netboot_sites import make_site

from provisioner.errors import InputError, OperationError
from provisioner.events import ASSET_DOWNLOAD, EventLog
from provisioner.netboot import assets
from provisioner.netboot.schematic import EMPTY_SCHEMATIC_ID, canonical_yaml, schematic_id


def test_empty_schematic_vector() -> None:
    assert canonical_yaml({"customization": {}}) == "customization: {}\n"
    assert schematic_id({"customization": {}}) == EMPTY_SCHEMATIC_ID
    assert schematic_id({}) == EMPTY_SCHEMATIC_ID  # customization is never omitted


def test_schematic_canonical_layout_and_order() -> None:
    text = canonical_yaml(
        {
            "customization": {
                "systemExtensions": {"officialExtensions": ["siderolabs/drbd", "siderolabs/zfs"]},
                "extraKernelArgs": ["net.ifnames=0"],
            }
        }
    )
    # struct order, 4-space indentation, sequences indented under their key (yaml.v3)
    assert text == (
        "customization:\n"
        "    extraKernelArgs:\n"
        "        - net.ifnames=0\n"
        "    systemExtensions:\n"
        "        officialExtensions:\n"
        "            - siderolabs/drbd\n"
        "            - siderolabs/zfs\n"
    )
    assert (
        schematic_id(
            {
                "customization": {
                    "extraKernelArgs": ["net.ifnames=0"],
                    "systemExtensions": {"officialExtensions": ["siderolabs/drbd", "siderolabs/zfs"]},
                }
            }
        )
        == hashlib.sha256(text.encode()).hexdigest()
    )


def test_schematic_unknown_key_is_input_error() -> None:
    with pytest.raises(InputError, match="extensions"):
        schematic_id({"customization": {"extensions": []}})


class _FactoryStandIn(BaseHTTPRequestHandler):
    """Image Factory stand-in: serves /image/<schematic>/<version>/<file> from a dict."""

    files: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def factory():
    handler = type("H", (_FactoryStandIn,), {"files": {}, "hits": []})
    srv = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield handler, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def inv_site(tmp_path: Path):
    site = make_site(tmp_path / "state")
    inv = tmp_path / "inv"
    inv.mkdir()
    return site.model_copy(update={"source": inv / "site.yaml"})


def _serve(handler, site, kernel: bytes, initramfs: bytes) -> None:
    base = f"/image/{EMPTY_SCHEMATIC_ID}/{site.cluster.talos.version}"
    handler.files.update({f"{base}/kernel-amd64": kernel, f"{base}/initramfs-amd64.xz": initramfs})


def test_fetch_pins_then_verifies(factory, inv_site, tmp_path: Path) -> None:
    handler, url = factory
    _serve(handler, inv_site, b"kernel-1", b"initramfs-1")
    events = EventLog(tmp_path / "events.jsonl")
    res = assets.fetch(inv_site, tmp_path / "assets", url, events)
    assert [r.outcome for r in res] == ["downloaded", "downloaded"] and all(r.pinned_now for r in res)
    d = tmp_path / "assets" / "v1.11.6" / EMPTY_SCHEMATIC_ID
    assert (d / "kernel-amd64").read_bytes() == b"kernel-1"
    lock = yaml.safe_load((tmp_path / "inv" / "assets.lock.yaml").read_text())
    entry = lock["assets"][f"v1.11.6/{EMPTY_SCHEMATIC_ID}"]["kernel-amd64"]
    assert entry["sha256"] == hashlib.sha256(b"kernel-1").hexdigest()
    assert [e.outcome for e in events.read() if e.kind == ASSET_DOWNLOAD] == ["ok", "ok"]
    # second run: cache matches the pin, nothing downloaded
    hits = len(handler.hits)
    assert [r.outcome for r in assets.fetch(inv_site, tmp_path / "assets", url)] == ["cached", "cached"]
    assert len(handler.hits) == hits
    assert assets.verify(inv_site, tmp_path / "assets") == []


def test_fetch_rejects_a_changed_file(factory, inv_site, tmp_path: Path) -> None:
    handler, url = factory
    _serve(handler, inv_site, b"kernel-1", b"initramfs-1")
    assets.fetch(inv_site, tmp_path / "assets", url)
    d = tmp_path / "assets" / "v1.11.6" / EMPTY_SCHEMATIC_ID
    (d / "kernel-amd64").unlink()
    _serve(handler, inv_site, b"kernel-EVIL", b"initramfs-1")
    with pytest.raises(OperationError, match="does not match the pin"):
        assets.fetch(inv_site, tmp_path / "assets", url)
    assert not (d / "kernel-amd64").exists()
    assert not list(d.glob(".download.*"))


def test_fetch_404_is_operation_error(factory, inv_site, tmp_path: Path) -> None:
    _, url = factory
    with pytest.raises(OperationError, match="404"):
        assets.fetch(inv_site, tmp_path / "assets", url)


def test_import_pins_and_refuses_silent_change(inv_site, tmp_path: Path) -> None:
    k, i = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"local kernel")
    i.write_bytes(b"local initrd")
    res = assets.import_files(inv_site, k, i, tmp_path / "assets")
    assert all(r.pinned_now for r in res)
    assert assets.verify(inv_site, tmp_path / "assets") == []
    k.write_bytes(b"other kernel")
    with pytest.raises(InputError, match="--update-lock"):
        assets.import_files(inv_site, k, i, tmp_path / "assets")
    assets.import_files(inv_site, k, i, tmp_path / "assets", update_lock=True)
    d = tmp_path / "assets" / "v1.11.6" / EMPTY_SCHEMATIC_ID
    assert (d / "kernel-amd64").read_bytes() == b"other kernel"
    assert assets.verify(inv_site, tmp_path / "assets") == []


def test_import_missing_file_is_input_error(inv_site, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a readable file"):
        assets.import_files(inv_site, tmp_path / "nope", tmp_path / "nope2", tmp_path / "assets")


def test_verify_reports_tampering(inv_site, tmp_path: Path) -> None:
    k, i = tmp_path / "k", tmp_path / "i"
    k.write_bytes(b"k")
    i.write_bytes(b"i")
    assets.import_files(inv_site, k, i, tmp_path / "assets")
    (tmp_path / "assets" / "v1.11.6" / EMPTY_SCHEMATIC_ID / "initramfs-amd64.xz").write_bytes(b"x")
    problems = assets.verify(inv_site, tmp_path / "assets")
    assert len(problems) == 1 and "initramfs" in problems[0]
