"""Read the upstream Cozystack facts the simulator needs from the copy inside the package.

The bundle release lists and CRD files were copied from the project's shared reference into
``provisioner/cozystack/upstream/`` (see its ``SOURCE.md`` and ``crds/SOURCES.txt``); nothing here reads
the shared reference at run time. Files are read through ``importlib.resources`` so this also works from
a wheel inside the lab image. The parsed data is cached: the files never change while a process runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

BUNDLES = ("paas-full", "paas-hosted", "distro-full", "distro-hosted")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: the CRD files are large


@dataclass(frozen=True)
class BundleEntry:
    """One ``- name:`` block of a v0.41.11 bundle file (``bundles/<bundle>.yaml``)."""

    name: str
    release_name: str
    namespace: str
    chart: str
    depends_on: tuple[str, ...]
    optional: bool
    disabled: bool


def _upstream(*parts: str) -> str:
    node = resources.files("provisioner.cozystack").joinpath("upstream")
    for part in parts:
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


@functools.cache
def bundle(name: str) -> tuple[BundleEntry, ...]:
    """The release list of bundle ``name`` in file order. KeyError for an unknown bundle."""
    if name not in BUNDLES:
        raise KeyError(name)
    items = yaml.load(_upstream("bundles", f"{name}.yaml"), Loader=_LOADER)  # a safe loader
    return tuple(
        BundleEntry(
            name=item["name"],
            release_name=item.get("releaseName", item["name"]),
            namespace=item["namespace"],
            chart=item["chart"],
            depends_on=tuple(item.get("dependsOn") or ()),
            optional=bool(item.get("optional")),
            disabled=bool(item.get("disabled")),
        )
        for item in items
    )


# Where each CRD the simulator serves is read from (crds/SOURCES.txt names the upstream paths).
_CRD_FILES = {
    "helmreleases.helm.toolkit.fluxcd.io": ("v0.41.11", "EXTRACT_helmreleases.helm.toolkit.fluxcd.io.yaml"),
    "helmrepositories.source.toolkit.fluxcd.io": ("v0.41.11", "flux-aio_templates_fluxcd.yaml"),
    "ipaddresspools.metallb.io": ("v0.41.11", "EXTRACT_ipaddresspools.metallb.io.yaml"),
    "l2advertisements.metallb.io": ("v0.41.11", "EXTRACT_l2advertisements.metallb.io.yaml"),
    "packages.cozystack.io": ("v1.6.2", "cozystack.io_packages.yaml"),
    "packagesources.cozystack.io": ("v1.6.2", "cozystack.io_packagesources.yaml"),
    "linstorclusters.piraeus.io": ("piraeus", "linstorclusters.piraeus.io.yaml"),
    "linstorsatellites.piraeus.io": ("piraeus", "linstorsatellites.piraeus.io.yaml"),
    "linstorsatelliteconfigurations.piraeus.io": (
        "piraeus",
        "linstorsatelliteconfigurations.piraeus.io.yaml",
    ),
    "linstornodeconnections.piraeus.io": ("piraeus", "linstornodeconnections.piraeus.io.yaml"),
    "kubevirts.kubevirt.io": ("kubevirt", "kubevirts.kubevirt.io.yaml"),
    "cdis.cdi.kubevirt.io": ("kubevirt", "cdis.cdi.kubevirt.io.yaml"),
}


@functools.cache
def _crd_spec(name: str) -> dict[str, Any]:
    """The spec of upstream CRD ``name``, parsing only the YAML document that defines it.

    The flux-aio file carries Helm template lines (``{{ include ... }}``) in its Deployment part,
    rendered by cozyhr upstream; the CRD documents have none, and only the one named is parsed.
    """
    folder, file = _CRD_FILES[name]
    for chunk in _upstream("crds", folder, file).split("\n---"):
        if f"name: {name}" not in chunk or "kind: CustomResourceDefinition" not in chunk:
            continue
        doc = yaml.load(chunk, Loader=_LOADER)  # a safe loader (CSafeLoader or SafeLoader)
        if isinstance(doc, dict) and (doc.get("metadata") or {}).get("name") == name:
            return dict(doc["spec"])
    raise KeyError(f"CRD {name} not found in crds/{folder}/{file}")


def crd(name: str) -> dict[str, Any]:
    """The upstream CustomResourceDefinition ``name`` (e.g. ``helmreleases.helm.toolkit.fluxcd.io``).

    Returned as a fresh manifest carrying only apiVersion, kind, metadata.name and spec, ready to apply.
    """
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": _crd_spec(name),
    }


FLUX_CRDS = ("helmreleases.helm.toolkit.fluxcd.io", "helmrepositories.source.toolkit.fluxcd.io")
PACKAGE_CRDS = ("packages.cozystack.io", "packagesources.cozystack.io")
METALLB_CRDS = ("ipaddresspools.metallb.io", "l2advertisements.metallb.io")
PIRAEUS_CRDS = (
    "linstorclusters.piraeus.io",
    "linstorsatellites.piraeus.io",
    "linstorsatelliteconfigurations.piraeus.io",
    "linstornodeconnections.piraeus.io",
)
KUBEVIRT_CRDS = ("kubevirts.kubevirt.io",)
CDI_CRDS = ("cdis.cdi.kubevirt.io",)


def data_files() -> list[str]:
    """The upstream files the simulator reads, relative to ``provisioner/cozystack/upstream``: the lab
    image copies exactly these, so the control planes can run the simulator without the whole tree."""
    files = [f"bundles/{name}.yaml" for name in BUNDLES]
    files += sorted({f"crds/{folder}/{file}" for folder, file in _CRD_FILES.values()})
    return files
