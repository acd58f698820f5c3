"""Installer assets: fetched over HTTP or imported, pinned by sha256 beside the inventory, verified
before anything is applied; and the progress reporter's three modes."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from platform_sites import data, load

from provisioner.cozystack import assets
from provisioner.cozystack.progress import PlatformProgress
from provisioner.errors import InputError, OperationError
from provisioner.inventory import Site
from provisioner.lab import platform_assets


@pytest.fixture
def release_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server laid out like the release downloads: /<version>/<file>."""
    root = tmp_path / "releases"
    platform_assets.write("v0.41.11", root / "v0.41.11")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", root
    finally:
        server.shutdown()


def site_in(tmp_path: Path, **cluster: str) -> Site:
    doc = data()
    doc["cluster"].update(cluster)
    return load(tmp_path, doc).site


def test_fetch_pins_then_verifies_and_refuses_a_changed_file(
    tmp_path: Path, release_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVISIONER_ASSETS_DIR", str(tmp_path / "cache"))
    url, root = release_server
    site = site_in(tmp_path)
    first = assets.fetch(site, base_url=url)
    assert [(r.name, r.outcome, r.pinned_now) for r in first] == [
        ("cozystack-installer.yaml", "downloaded", True)
    ]
    lock = yaml.safe_load((site.base_dir / "cozystack-assets.lock.yaml").read_text())
    assert lock["assets"]["v0.41.11"]["cozystack-installer.yaml"]["sha256"] == first[0].sha256
    assert [r.outcome for r in assets.fetch(site, base_url=url)] == ["cached"]
    docs = assets.load(site)["cozystack-installer.yaml"]
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRoleBinding", "Deployment"]
    # upstream changed the file behind the same version: refused, the cached copy stays
    (root / "v0.41.11" / "cozystack-installer.yaml").write_text("# tampered\n")
    (tmp_path / "cache" / "cozystack" / "v0.41.11" / "cozystack-installer.yaml").write_text("# tampered\n")
    with pytest.raises(OperationError, match="does not match the pin"):
        assets.fetch(site, base_url=url)
    with pytest.raises(OperationError, match="does not match the pin"):
        assets.load(site)


def test_missing_assets_and_unreachable_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_ASSETS_DIR", str(tmp_path / "cache"))
    site = site_in(tmp_path)
    with pytest.raises(OperationError, match="run `provisioner platform assets fetch"):
        assets.load(site)
    with pytest.raises(
        OperationError, match=r"download http://127\.0\.0\.1:9/v0\.41\.11/cozystack-installer\.yaml"
    ):
        assets.fetch(site, base_url="http://127.0.0.1:9")


def test_import_for_air_gapped_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_ASSETS_DIR", str(tmp_path / "cache"))
    site = site_in(tmp_path, cozystack_version="v1.6.2")
    carried = tmp_path / "usb"
    platform_assets.write("v1.6.2", carried)
    with pytest.raises(InputError, match="missing"):
        assets.import_dir(site, tmp_path / "empty")
    results = assets.import_dir(site, carried)
    assert [r.name for r in results] == ["cozystack-crds.yaml", "cozystack-operator-talos.yaml"]
    assert set(assets.load(site)) == {"cozystack-crds.yaml", "cozystack-operator-talos.yaml"}
    (carried / "cozystack-crds.yaml").write_text("# other\n")
    with pytest.raises(InputError, match="--update-lock"):
        assets.import_dir(site, carried)
    assert assets.import_dir(site, carried, update_lock=True)[0].pinned_now


def test_hosted_v1_uses_the_generic_operator(tmp_path: Path) -> None:
    doc = data("paas-hosted")
    doc["cluster"]["cozystack_version"] = "v1.6.2"
    site = load(tmp_path, doc).site
    assert assets.asset_names(site) == ["cozystack-crds.yaml", "cozystack-operator-generic.yaml"]


def test_stand_in_assets_say_so() -> None:
    for doc in platform_assets.installer_v0("v0.41.11"):
        assert doc["metadata"]["labels"]["provisioner.dev/stand-in"] == "true"
    deployment = platform_assets.installer_v0("v0.41.11")[-1]
    assert "stand-in" in deployment["spec"]["template"]["spec"]["containers"][0]["image"]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_modes() -> None:
    tty = FakeTty()
    p = PlatformProgress("text", tty)
    p.stage("helmreleases", "running", "HelmReleases 1/7 ready")
    p.stage("helmreleases", "running", "HelmReleases 2/7 ready")
    p.stage("helmreleases", "done", "HelmReleases 7/7 ready")
    assert tty.getvalue() == (
        "\r\x1b[2Khelmreleases: HelmReleases 1/7 ready\r\x1b[2Khelmreleases: HelmReleases 2/7 ready\n"
        "helmreleases: done: HelmReleases 7/7 ready\n"
    )
    pipe = io.StringIO()
    p = PlatformProgress("text", pipe)
    p.stage("storage", "warning", "only 2 nodes", level="warning")
    p.stage("storage", "running", "waiting")
    assert pipe.getvalue() == "warning: storage: warning: only 2 nodes\nstorage: running: waiting\n"
    js = io.StringIO()
    PlatformProgress("json", js).stage("tenants", "done", "3 tenants")
    rec = json.loads(js.getvalue())
    assert (rec["stage"], rec["status"], rec["message"], rec["level"]) == (
        "tenants",
        "done",
        "3 tenants",
        "info",
    )
