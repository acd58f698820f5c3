"""Every object the platform stage applies, validated for all four bundles (and v1 where a variant
exists): built-in kinds with kubernetes-validate (1.34 schemas, strict), custom resources with
jsonschema against the openAPIV3Schema of the upstream CRDs copied into the package, made strict
(unknown fields are errors, as a real API server prunes or rejects them)."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from platform_sites import BUNDLES, data, load

from provisioner.cozystack import manifests
from provisioner.cozystack.releases import V1_VARIANTS
from provisioner.inventory import Site
from provisioner.lab import platform_assets

K8S_VERSION = "1.34.0"
CRDS = resources.files("provisioner.cozystack").joinpath("upstream", "crds")
# (apiVersion, kind) -> CRD file under upstream/crds/, per Cozystack major version
CRD_FILES = {
    (
        "piraeus.io/v1",
        "LinstorSatelliteConfiguration",
    ): "piraeus/linstorsatelliteconfigurations.piraeus.io.yaml",
    ("metallb.io/v1beta1", "IPAddressPool"): "{v}/EXTRACT_ipaddresspools.metallb.io.yaml",
    ("metallb.io/v1beta1", "L2Advertisement"): "{v}/EXTRACT_l2advertisements.metallb.io.yaml",
    ("cozystack.io/v1alpha1", "Package"): "v1.6.2/cozystack.io_packages.yaml",
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): "{v}/EXTRACT_helmreleases.helm.toolkit.fluxcd.io.yaml",
}


def _strict(schema: Any) -> Any:
    """Unknown properties become errors wherever the schema lists properties and does not say otherwise."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _drop_required(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _drop_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [_drop_required(v) for v in schema]
    return schema


@cache
def crd_schema(path: str, api_version: str, kind: str) -> tuple[dict[str, Any], str]:
    version = api_version.rpartition("/")[2]
    for doc in yaml.safe_load_all(CRDS.joinpath(path).read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition" or doc["spec"]["names"]["kind"] != kind:
            continue
        assert doc["spec"]["group"] == api_version.rpartition("/")[0]
        for v in doc["spec"]["versions"]:
            if v["name"] == version:
                assert v["served"], f"{kind} {version} is not served"
                schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}
                return _strict(schema), doc["spec"]["scope"]
    raise AssertionError(f"no CRD for {kind} {api_version} in {path}")


@cache
def tenant_schema(major: str) -> dict[str, Any]:
    spec = json.loads(CRDS.joinpath(major, "apps_tenant_values.schema.json").read_text())
    spec = _strict(spec)
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "apps.cozystack.io/v1alpha1"},
            "kind": {"const": "Tenant"},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": spec,
        },
        "additionalProperties": False,
    }


def validate(obj: dict[str, Any], v1: bool, partial: bool = False) -> None:
    key = (obj["apiVersion"], obj["kind"])
    major = "v1.6.2" if v1 else "v0.41.11"
    assert obj["metadata"].get("name"), obj
    if key == ("apps.cozystack.io/v1alpha1", "Tenant"):
        jsonschema.validate(obj, tenant_schema(major))
        return
    if key in CRD_FILES:
        schema, scope = crd_schema(CRD_FILES[key].format(v=major), *key)
        jsonschema.validate(obj, _drop_required(schema) if partial else schema)
        assert ("namespace" in obj["metadata"]) == (scope == "Namespaced"), obj["metadata"]
        return
    assert "." not in key[0].split("/")[0] or key[0].endswith(".k8s.io/v1"), f"no schema for custom {key}"
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def applied_objects(site: Site) -> list[dict[str, Any]]:
    """What the stages apply for ``site``, the installer/operator manifests from the lab's assets."""
    v1 = site.cluster.cozystack_version.startswith("v1.")
    hosted = site.cluster.bundle_spec.hosted
    out: list[dict[str, Any]] = [manifests.system_namespace()]
    if v1:
        out += platform_assets.crds_v1()
        out.append(manifests.platform_package(site))
        installer = platform_assets.operator_v1(
            site.cluster.cozystack_version, "generic" if hosted else "talos"
        )
    else:
        out.append(manifests.configmap(site))
        installer = platform_assets.installer_v0(site.cluster.cozystack_version)
    if hosted:
        installer = manifests.point_installer_at(installer, site.api_endpoint or "https://203.0.113.5:6443")
    out += installer
    bundle = site.cluster.bundle_spec
    if bundle.has_linstor and not hosted:
        out += manifests.satellite_configurations(site) + manifests.storage_classes(site)
    if bundle.metallb and not hosted:
        out += manifests.metallb_objects(site)
    if bundle.has_multitenancy:
        out += manifests.tenant_objects(site, v1)
    return out


CASES = [(b, "v0.41.11") for b in BUNDLES] + [(b, "v1.6.2") for b in V1_VARIANTS]


@pytest.mark.parametrize(("bundle", "version"), CASES)
def test_every_applied_object_is_valid(tmp_path: Path, bundle: str, version: str) -> None:
    doc = data(bundle)
    doc["cluster"]["cozystack_version"] = version
    site = load(tmp_path, doc).site
    objs = applied_objects(site)
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "ServiceAccount", "ClusterRoleBinding"} <= kinds
    if bundle == "paas-full":
        assert {
            "LinstorSatelliteConfiguration",
            "StorageClass",
            "IPAddressPool",
            "L2Advertisement",
            "Tenant",
        } <= kinds
    for obj in objs:
        validate(obj, version.startswith("v1."))


@pytest.mark.parametrize("version", ["v0.41.11", "v1.6.2"])
def test_nudge_patches_are_valid_helmrelease_fields(version: str) -> None:
    base = {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease"}
    meta = {"name": "kubevirt", "namespace": "cozy-kubevirt"}
    for patch in (
        {**base, "metadata": {**meta, "annotations": {"reconcile.fluxcd.io/requestedAt": "1"}}},
        {**base, "metadata": meta, "spec": {"suspend": True}},
        {**base, "metadata": meta, "spec": {"suspend": False}},
    ):
        validate(patch, version.startswith("v1."), partial=True)


def test_the_validators_catch_mistakes(tmp_path: Path) -> None:
    """The strict checks can fail: a typo in a built-in and in a custom resource is caught."""
    site = load(tmp_path, data()).site
    sc = manifests.storage_classes(site)[0]
    sc["volumeBindingMod"] = "Immediate"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(sc, False)
    lsc = manifests.satellite_configurations(site)[0]
    lsc["spec"]["storagePools"][0]["zfsPol"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate(lsc, False)
    tenant = manifests.tenant_objects(site)[0]
    tenant["spec"]["isolated"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate(tenant, True)  # v1.6.2 dropped `isolated`
    pool = manifests.metallb_objects(site)[0]
    del pool["metadata"]["namespace"]
    with pytest.raises(AssertionError):
        validate(pool, False)
