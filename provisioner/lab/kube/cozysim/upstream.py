"""Read the upstream Cozystack facts the simulator needs from the copy inside the package.

The bundle release lists and CRD files were copied from the project's shared reference into
``provisioner/cozystack/upstream/`` (see its ``SOURCE.md`` and ``crds/SOURCES.txt``); nothing here may
read ``/work/shared`` at run time. Files are read through ``importlib.resources`` so this also works from
a wheel inside the lab image. The parsed data is cached: the files never change while a process runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

BUNDLES = ("paas-full", "paas-hosted", "distro-full", "distro-hosted")


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
    items = yaml.safe_load(_upstream("bundles", f"{name}.yaml"))
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


def _documents(text: str) -> list[dict[str, Any]]:
    """YAML documents of a multi-document file, skipping ones that are Helm templates.

    The flux-aio file carries ``{{ include ... }}`` lines in its Deployment part (rendered by cozyhr
    upstream); the CRD documents have none, so a document that does not parse is not one we need.
    """
    docs: list[dict[str, Any]] = []
    for chunk in text.split("\n---"):
        if "{{" in chunk:
            continue
        doc = yaml.safe_load(chunk)
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


@functools.cache
def _crd_index() -> dict[str, dict[str, Any]]:
    files = [
        ("v0.41.11", "flux-aio_templates_fluxcd.yaml"),
        ("v0.41.11", "EXTRACT_ipaddresspools.metallb.io.yaml"),
        ("v0.41.11", "EXTRACT_l2advertisements.metallb.io.yaml"),
        ("v1.6.2", "cozystack.io_packages.yaml"),
        ("v1.6.2", "cozystack.io_packagesources.yaml"),
        ("piraeus", "linstorclusters.piraeus.io.yaml"),
        ("piraeus", "linstorsatellites.piraeus.io.yaml"),
        ("piraeus", "linstorsatelliteconfigurations.piraeus.io.yaml"),
        ("piraeus", "linstornodeconnections.piraeus.io.yaml"),
        ("kubevirt", "kubevirts.kubevirt.io.yaml"),
        ("kubevirt", "cdis.cdi.kubevirt.io.yaml"),
    ]
    index: dict[str, dict[str, Any]] = {}
    for folder, file in files:
        for doc in _documents(_upstream("crds", folder, file)):
            if doc.get("kind") == "CustomResourceDefinition":
                index[doc["metadata"]["name"]] = doc
    return index


def crd(name: str) -> dict[str, Any]:
    """The upstream CustomResourceDefinition ``name`` (e.g. ``helmreleases.helm.toolkit.fluxcd.io``).

    Returned as a fresh manifest carrying only apiVersion, kind, metadata.name and spec, ready to apply.
    """
    doc = _crd_index()[name]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": doc["spec"],
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
