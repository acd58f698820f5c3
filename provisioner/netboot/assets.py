"""Talos kernel and initramfs: downloaded from the Image Factory or imported, then pinned.

The cache lives at ``<assets root>/<talos version>/<schematic id>/`` (root default:
``<state dir>/../assets``, or ``PROVISIONER_ASSETS_DIR``), so several clusters and versions
share downloads. The sha256 of every file is pinned in ``assets.lock.yaml`` beside the
inventory (committed with it; the inventory loader ignores ``*.lock.yaml``): the first
fetch or import pins, every later one must match, so a site boots the exact bits it was
tested with. Air-gapped sites use ``import`` with files carried in by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, OperationError
from ..events import ASSET_DOWNLOAD, EventLog
from ..fsutil import atomic_write
from ..inventory.model import Site
from .ipxe import INITRAMFS, KERNEL
from .schematic import schematic_id

FACTORY_URL = "https://factory.talos.dev"
ASSET_FILES = (KERNEL, INITRAMFS)
LOCK_NAME = "assets.lock.yaml"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class AssetSet:
    version: str
    schematic: str
    directory: Path

    @property
    def key(self) -> str:
        return f"{self.version}/{self.schematic}"

    def path(self, name: str) -> Path:
        return self.directory / name

    def missing(self) -> list[str]:
        return [f for f in ASSET_FILES if not self.path(f).is_file()]


def default_root(site: Site) -> Path:
    env = os.environ.get("PROVISIONER_ASSETS_DIR")
    return Path(env) if env else site.state_dir.parent / "assets"


def asset_set(site: Site, root: Path | None = None) -> AssetSet:
    sid = schematic_id(site.cluster.talos.schematic)
    version = site.cluster.talos.version
    return AssetSet(version, sid, (root or default_root(site)) / version / sid)


def lock_path(site: Site) -> Path:
    return site.base_dir / LOCK_NAME


def read_lock(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {"assets": {}}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("assets", {}), dict):
        raise InputError(f"{path}: expected a mapping with an 'assets' mapping")
    raw.setdefault("assets", {})
    return raw


def write_lock(path: Path, lock: dict[str, Any], header: str) -> None:
    """A sha256 lock file (``assets:`` mapping) with a comment saying what wrote it; read by ``read_lock``."""
    atomic_write(path, header + yaml.safe_dump(lock, sort_keys=True), mode=0o644)


def _write_lock(path: Path, lock: dict[str, Any]) -> None:
    write_lock(
        path,
        lock,
        "# Pinned Talos boot assets (sha256). Written by `provisioner assets fetch|import`; commit it.\n",
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _pin(lock: dict[str, Any], aset: AssetSet, name: str) -> str | None:
    entry = lock["assets"].get(aset.key, {}).get(name)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise InputError(f"{LOCK_NAME}: assets.{aset.key}.{name}.sha256 is missing or not a string")
    return str(entry["sha256"])


def _record(lock: dict[str, Any], aset: AssetSet, name: str, digest: str, size: int, source: str) -> None:
    lock["assets"].setdefault(aset.key, {})[name] = {"sha256": digest, "size": size, "source": source}


@dataclass(frozen=True)
class AssetResult:
    name: str
    path: Path
    sha256: str
    outcome: str  # downloaded | cached | imported
    pinned_now: bool


def fetch(
    site: Site,
    root: Path | None = None,
    factory_url: str = FACTORY_URL,
    events: EventLog | None = None,
    timeout: float = 60.0,
) -> list[AssetResult]:
    """Download kernel and initramfs for the site's version and schematic; verify or pin."""
    aset = asset_set(site, root)
    lpath = lock_path(site)
    lock = read_lock(lpath)
    aset.directory.mkdir(parents=True, exist_ok=True)
    results = []
    for name in ASSET_FILES:
        pinned = _pin(lock, aset, name)
        target = aset.path(name)
        if target.is_file() and pinned is not None and sha256_file(target) == pinned:
            results.append(AssetResult(name, target, pinned, "cached", False))
            continue
        url = f"{factory_url.rstrip('/')}/image/{aset.schematic}/{aset.version}/{name}"
        try:
            digest, size, tmp = download(url, aset.directory, timeout)
        except OperationError as exc:
            if events:
                events.append(ASSET_DOWNLOAD, None, "error", file=name, url=url, reason=str(exc))
            raise
        if pinned is not None and digest != pinned:
            tmp.unlink(missing_ok=True)
            if events:
                events.append(ASSET_DOWNLOAD, None, "error", file=name, url=url, reason="sha256 mismatch")
            raise OperationError(
                f"{url}: sha256 {digest} does not match the pin {pinned} in {lpath}; "
                "the download was discarded"
            )
        os.replace(tmp, target)
        if pinned is None:
            _record(lock, aset, name, digest, size, "factory")
        if events:
            events.append(ASSET_DOWNLOAD, None, "ok", file=name, url=url, sha256=digest, size=size)
        results.append(AssetResult(name, target, digest, "downloaded", pinned is None))
    if any(r.pinned_now for r in results):
        _write_lock(lpath, lock)
    return results


def download(url: str, directory: Path, timeout: float) -> tuple[str, int, Path]:
    """Stream ``url`` into a temp file in ``directory``: (sha256, size, temp path); the caller
    checks the pin and renames it into place, so a partial download is never mistaken for an asset."""
    h = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=".download.", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        reason = (
            f"HTTP {exc.code} {exc.reason}"
            if isinstance(exc, urllib.error.HTTPError)
            else (getattr(exc, "reason", None) or exc)
        )
        raise OperationError(f"download {url} failed: {reason}") from None
    os.chmod(tmp, 0o644)
    return h.hexdigest(), size, tmp


def import_files(
    site: Site,
    kernel: Path,
    initramfs: Path,
    root: Path | None = None,
    update_lock: bool = False,
    events: EventLog | None = None,
) -> list[AssetResult]:
    """Copy local files into the cache (air-gapped sites, the lab), verified against or
    pinned in the lock file; ``update_lock`` re-pins deliberately changed files."""
    aset = asset_set(site, root)
    lpath = lock_path(site)
    lock = read_lock(lpath)
    sources = {KERNEL: Path(kernel), INITRAMFS: Path(initramfs)}
    for name, src in sources.items():
        if not src.is_file():
            raise InputError(f"assets import: {src} ({name}) is not a readable file")
    digests = {name: sha256_file(src) for name, src in sources.items()}
    for name, digest in digests.items():
        pinned = _pin(lock, aset, name)
        if pinned is not None and pinned != digest and not update_lock:
            raise InputError(
                f"assets import: {sources[name]} has sha256 {digest}, but {lpath} pins {name} to {pinned}; "
                "pass --update-lock to re-pin deliberately"
            )
    aset.directory.mkdir(parents=True, exist_ok=True)
    results = []
    changed = False
    for name, src in sources.items():
        fd, tmp_name = tempfile.mkstemp(prefix=".import.", dir=aset.directory)
        os.close(fd)
        shutil.copyfile(src, tmp_name)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, aset.path(name))
        pinned = _pin(lock, aset, name)
        if pinned != digests[name]:
            _record(lock, aset, name, digests[name], aset.path(name).stat().st_size, "import")
            changed = True
        if events:
            events.append(
                ASSET_DOWNLOAD, None, "ok", file=name, source=str(src), sha256=digests[name], imported=True
            )
        results.append(AssetResult(name, aset.path(name), digests[name], "imported", pinned != digests[name]))
    if changed:
        _write_lock(lpath, lock)
    return results


def verify(site: Site, root: Path | None = None) -> list[str]:
    """Problems with the cached assets (missing, or not matching their pin); empty if fine."""
    aset = asset_set(site, root)
    lock = read_lock(lock_path(site))
    problems = []
    for name in ASSET_FILES:
        path = aset.path(name)
        if not path.is_file():
            problems.append(f"{path} is missing (run `provisioner assets fetch` or `assets import`)")
            continue
        pinned = _pin(lock, aset, name)
        if pinned is None:
            problems.append(f"{name} is not pinned in {lock_path(site)}")
        elif sha256_file(path) != pinned:
            problems.append(f"{path} does not match its pinned sha256")
    return problems
