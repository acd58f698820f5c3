"""The HelmReleases a bundle is expected to produce, read from the copied upstream bundle files.

Waiting for "every HelmRelease that happens to exist" is how Cozystack's own v0.41 e2e gate
could pass with releases missing (upstream PR #2824); the tool instead computes the complete
expected set up front from the bundle file, ``bundle-enable``/``bundle-disable`` and the OIDC
gate, exactly as ``packages/core/platform/templates/helmreleases.yaml`` renders it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

# Releases installed only when oidc-enabled == "true" (helmreleases.yaml gates them by name).
OIDC_GATED = ("keycloak", "keycloak-operator", "keycloak-configure")
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?$")

# v1.x renamed the bundles to variants of the platform Package; distro-* have none
# (upstream v1.6.2 knows default / isp-full / isp-hosted / isp-full-generic only).
V1_VARIANTS = {"paas-full": "isp-full", "paas-hosted": "isp-hosted"}


@dataclass(frozen=True)
class Release:
    """One entry of an upstream bundle file."""

    name: str
    namespace: str
    release_name: str
    chart: str
    depends_on: tuple[str, ...]
    optional: bool
    oidc_gated: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ExpectedRelease:
    """A HelmRelease the install must bring to Ready, with its dependencies as ``ns/name`` keys."""

    key: str
    depends_on: tuple[str, ...] = field(default=())


def cozystack_major(version: str) -> int:
    """0 for the ConfigMap-driven v0.x line, 1 for the operator + Package line."""
    m = _VERSION.match(version)
    if not m:
        raise ValueError(f"{version!r} is not a Cozystack version like v0.41.11")
    return int(m[1])


@cache
def bundle_releases(bundle: str) -> tuple[Release, ...]:
    """Every entry of ``upstream/bundles/<bundle>.yaml``, in file order."""
    text = resources.files(__package__).joinpath("upstream", "bundles", f"{bundle}.yaml").read_text()
    entries: list[dict[str, Any]] = yaml.safe_load(text)
    return tuple(
        Release(
            name=e["name"],
            namespace=e["namespace"],
            release_name=e["releaseName"],
            chart=e["chart"],
            depends_on=tuple(e.get("dependsOn") or ()),
            optional=bool(e.get("optional")),
            oidc_gated=bool(e.get("disabled")) or e["name"] in OIDC_GATED,
        )
        for e in entries
    )


def release_names(bundle: str) -> set[str]:
    return {r.name for r in bundle_releases(bundle)}


def optional_names(bundle: str) -> list[str]:
    return [r.name for r in bundle_releases(bundle) if r.optional]


def expected_releases(
    bundle: str,
    enable: list[str] | tuple[str, ...] = (),
    disable: list[str] | tuple[str, ...] = (),
    oidc_enabled: bool = False,
) -> dict[str, ExpectedRelease]:
    """The HelmReleases the platform chart renders for this configuration, keyed ``ns/name``.

    Includes ``tenant-root/tenant-root`` (templates/apps.yaml), which depends on cilium and/or
    kubeovn when the bundle has them. ``dependsOn`` drops disabled names like upstream does, and
    keeps optional-but-not-enabled ones (upstream renders those too: the release then waits forever,
    which ``validate`` refuses up front).
    """
    releases = bundle_releases(bundle)
    by_name = {r.name: r for r in releases}
    enabled, disabled = set(enable), set(disable)
    out: dict[str, ExpectedRelease] = {}
    for r in releases:
        if r.name in disabled or (r.optional and r.name not in enabled):
            continue
        if r.oidc_gated and not oidc_enabled:
            continue
        deps = tuple(by_name[d].key for d in r.depends_on if d not in disabled and d in by_name)
        out[r.key] = ExpectedRelease(r.key, deps)
    root_deps = tuple(by_name[n].key for n in ("cilium", "kubeovn") if n in by_name and n not in disabled)
    out["tenant-root/tenant-root"] = ExpectedRelease("tenant-root/tenant-root", root_deps)
    return out


def dangling_dependencies(
    bundle: str, enable: list[str], disable: list[str], oidc_enabled: bool = False
) -> dict[str, list[str]]:
    """Enabled releases whose dependency will never exist (an optional one not enabled): name -> missing."""
    expected = expected_releases(bundle, enable, disable, oidc_enabled)
    out: dict[str, list[str]] = {}
    for rel in expected.values():
        missing = [d for d in rel.depends_on if d not in expected]
        if missing:
            out[rel.key] = missing
    return out
