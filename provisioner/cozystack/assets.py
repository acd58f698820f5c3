"""Cozystack's installer manifests: fetched from the release or imported, pinned, cached.

Same contract as the Talos boot assets (``netboot/assets.py``): files live in
``<assets root>/cozystack/<version>/``, their sha256 is pinned in ``cozystack-assets.lock.yaml``
beside the inventory (the loader ignores ``*.lock.yaml``; commit it), the first fetch or import
pins and every later one must match. Air-gapped sites and the lab use ``import``.
v0.x ships one file (``cozystack-installer.yaml``); v1.x ships the CRDs and an operator manifest
per platform (Talos, or generic for a hosted cluster).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, OperationError
from ..inventory.model import Site
from ..netboot.assets import default_root, download, read_lock, sha256_file, write_lock
from .releases import cozystack_major

RELEASE_URL = "https://github.com/cozystack/cozystack/releases/download"
LOCK_NAME = "cozystack-assets.lock.yaml"


def asset_names(site: Site) -> list[str]:
    """The release files this site's version and bundle need, in apply order."""
    if cozystack_major(site.cluster.cozystack_version) == 0:
        return ["cozystack-installer.yaml"]
    flavour = "generic" if site.cluster.bundle_spec.hosted else "talos"
    return ["cozystack-crds.yaml", f"cozystack-operator-{flavour}.yaml"]


def cache_dir(site: Site, root: Path | None = None) -> Path:
    return (root or default_root(site)) / "cozystack" / site.cluster.cozystack_version


def lock_path(site: Site) -> Path:
    return site.base_dir / LOCK_NAME


def _write_lock(path: Path, lock: dict[str, Any]) -> None:
    write_lock(
        path,
        lock,
        "# Pinned Cozystack installer assets (sha256). Written by `provisioner platform assets`; "
        "commit it.\n",
    )


def _pin(lock: dict[str, Any], version: str, name: str, lpath: Path) -> str | None:
    entry = lock["assets"].get(version, {}).get(name)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise InputError(f"{lpath}: assets.{version}.{name}.sha256 is missing or not a string")
    return str(entry["sha256"])


@dataclass(frozen=True)
class AssetResult:
    name: str
    path: Path
    sha256: str
    outcome: str  # downloaded | cached | imported
    pinned_now: bool


def fetch(
    site: Site, root: Path | None = None, base_url: str = RELEASE_URL, timeout: float = 60.0
) -> list[AssetResult]:
    """Download the release files of the pinned version; verify against the lock or pin them."""
    version = site.cluster.cozystack_version
    lpath = lock_path(site)
    lock = read_lock(lpath)
    directory = cache_dir(site, root)
    directory.mkdir(parents=True, exist_ok=True)
    results = []
    for name in asset_names(site):
        pinned = _pin(lock, version, name, lpath)
        target = directory / name
        if target.is_file() and pinned is not None and sha256_file(target) == pinned:
            results.append(AssetResult(name, target, pinned, "cached", False))
            continue
        url = f"{base_url.rstrip('/')}/{version}/{name}"
        digest, size, tmp = download(url, directory, timeout)
        if pinned is not None and digest != pinned:
            tmp.unlink(missing_ok=True)
            raise OperationError(
                f"{url}: sha256 {digest} does not match the pin {pinned} in {lpath}; download discarded"
            )
        os.replace(tmp, target)
        if pinned is None:
            lock["assets"].setdefault(version, {})[name] = {"sha256": digest, "size": size, "source": url}
        results.append(AssetResult(name, target, digest, "downloaded", pinned is None))
    if any(r.pinned_now for r in results):
        _write_lock(lpath, lock)
    return results


def import_dir(
    site: Site, source: Path, root: Path | None = None, update_lock: bool = False
) -> list[AssetResult]:
    """Copy the release files from ``source`` (a directory) into the cache, verified or pinned."""
    version = site.cluster.cozystack_version
    lpath = lock_path(site)
    lock = read_lock(lpath)
    names = asset_names(site)
    files = {n: Path(source) / n for n in names}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(
            f"platform assets import: missing {', '.join(missing)} (Cozystack {version} needs {names})"
        )
    digests = {n: sha256_file(p) for n, p in files.items()}
    for n, digest in digests.items():
        pinned = _pin(lock, version, n, lpath)
        if pinned is not None and pinned != digest and not update_lock:
            raise InputError(
                f"platform assets import: {files[n]} has sha256 {digest}, but {lpath} pins it to {pinned}; "
                "pass --update-lock to re-pin deliberately"
            )
    directory = cache_dir(site, root)
    directory.mkdir(parents=True, exist_ok=True)
    results, changed = [], False
    for n, src in files.items():
        fd, tmp = tempfile.mkstemp(prefix=".import.", dir=directory)
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / n)
        pinned_now = _pin(lock, version, n, lpath) != digests[n]
        if pinned_now:
            lock["assets"].setdefault(version, {})[n] = {
                "sha256": digests[n],
                "size": src.stat().st_size,
                "source": "import",
            }
            changed = True
        results.append(AssetResult(n, directory / n, digests[n], "imported", pinned_now))
    if changed:
        _write_lock(lpath, lock)
    return results


def load(site: Site, root: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The verified manifests, ``name -> documents``; a missing or changed file is an error
    telling the operator how to get it (nothing is applied from an unpinned file)."""
    version = site.cluster.cozystack_version
    lpath = lock_path(site)
    lock = read_lock(lpath)
    directory = cache_dir(site, root)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in asset_names(site):
        path = directory / name
        pinned = _pin(lock, version, name, lpath)
        if not path.is_file():
            raise OperationError(
                f"Cozystack {version} asset {name} is not in {directory}: "
                "run `provisioner platform assets fetch` "
                "(or `assets import` on an air-gapped site)"
            )
        if pinned is None:
            raise OperationError(
                f"{name} is not pinned in {lpath}: run `provisioner platform assets fetch|import`"
            )
        digest = sha256_file(path)
        if digest != pinned:
            raise OperationError(f"{path}: sha256 {digest} does not match the pin {pinned} in {lpath}")
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as exc:
            raise OperationError(f"{path}: not valid YAML: {exc}") from None
        out[name] = docs
    return out


def pins(site: Site) -> dict[str, str]:
    """name -> pinned sha256 (for the stage record)."""
    lpath = lock_path(site)
    lock = read_lock(lpath)
    version = site.cluster.cozystack_version
    return {n: p for n in asset_names(site) if (p := _pin(lock, version, n, lpath))}
