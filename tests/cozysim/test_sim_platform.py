"""The simulator's platform rendering: bundle lists, enable/disable, the paas guard, v1 variants."""

from __future__ import annotations

import pytest

from provisioner.lab.kube.cozysim import platform, upstream

PAAS = {"root-host": "example.org", "api-server-endpoint": "https://10.0.0.10:6443"}

# Counts from provisioner/cozystack/upstream/bundles/README.md (installed by default, longest chain).
EXPECTED = {"paas-full": (76, 7), "paas-hosted": (51, 4), "distro-full": (41, 6), "distro-hosted": (6, 2)}


@pytest.mark.parametrize("bundle", upstream.BUNDLES)
def test_default_render_matches_upstream_counts(bundle: str) -> None:
    rendered = platform.render_v0({"bundle-name": bundle, **PAAS})
    system = [r for r in rendered.releases if r.system_app]
    count, depth = EXPECTED[bundle]
    assert len(system) == count
    levels = platform.dependency_levels(rendered.releases)
    assert len(levels) == len(rendered.releases), "every default release must be installable"
    assert max(levels[r.key] for r in system) == depth
    assert rendered.release("tenant-root") is not None


def test_depends_on_carries_the_dependency_namespace() -> None:
    rendered = platform.render_v0({"bundle-name": "paas-full", **PAAS})
    kubevirt = rendered.release("kubevirt")
    assert kubevirt is not None
    assert ("cozy-kubevirt", "kubevirt-operator") in kubevirt.depends_on
    assert ("cozy-cilium", "cilium") in kubevirt.depends_on
    manifest = platform.helmrelease_manifest(kubevirt)
    assert {"name": "kubevirt-operator", "namespace": "cozy-kubevirt"} in manifest["spec"]["dependsOn"]
    assert manifest["metadata"]["labels"][platform.SYSTEM_APP_LABEL] == "true"


def test_tenant_root_depends_on_the_cni_of_the_bundle() -> None:
    full = platform.render_v0({"bundle-name": "paas-full", **PAAS}).release("tenant-root")
    distro = platform.render_v0({"bundle-name": "distro-full"}).release("tenant-root")
    hosted = platform.render_v0({"bundle-name": "paas-hosted", **PAAS}).release("tenant-root")
    assert full and distro and hosted
    assert full.depends_on == (("cozy-cilium", "cilium"), ("cozy-kubeovn", "kubeovn"))
    assert distro.depends_on == (("cozy-cilium", "cilium"),)
    assert hosted.depends_on == ()
    manifest = platform.helmrelease_manifest(full)
    assert manifest["spec"]["chart"]["spec"]["sourceRef"]["name"] == "cozystack-apps"
    assert manifest["spec"]["values"] == {"host": "example.org"}


def test_bundle_enable_adds_optional_and_disable_removes_and_unlinks() -> None:
    base = platform.render_v0({"bundle-name": "paas-full", **PAAS})
    assert base.release("velero") is None
    data = {
        "bundle-name": "paas-full",
        **PAAS,
        "bundle-enable": "velero, telepresence",
        "bundle-disable": "metallb",
    }
    changed = platform.render_v0(data)
    assert changed.release("velero") is not None
    assert changed.release("telepresence") is not None
    assert changed.release("metallb") is None
    assert all(name != "metallb" for r in changed.releases for _, name in r.depends_on)


def test_oidc_gate_renders_keycloak_and_the_dashboard_edge() -> None:
    off = platform.render_v0({"bundle-name": "paas-full", **PAAS})
    on = platform.render_v0({"bundle-name": "paas-full", **PAAS, "oidc-enabled": "true"})
    assert off.release("keycloak") is None
    assert on.release("keycloak") is not None
    dashboard = on.release("dashboard")
    assert dashboard and ("cozy-keycloak", "keycloak-configure") in dashboard.depends_on
    # "false" is not "true": helmreleases.yaml still skips keycloak
    assert (
        platform.render_v0({"bundle-name": "paas-full", **PAAS, "oidc-enabled": "false"}).release("keycloak")
        is None
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bundle-name": "paas-full", "api-server-endpoint": "https://x:6443"}, "need root-host"),
        ({"bundle-name": "paas-hosted", "root-host": "example.org"}, "need api-server-endpoint"),
        ({"bundle-name": "paas-mega", **PAAS}, "unknown bundle 'paas-mega'"),
        ({**PAAS}, "need bundle-name"),
    ],
)
def test_render_refusals_use_upstream_wording(data: dict[str, str], message: str) -> None:
    with pytest.raises(platform.RenderError, match=message):
        platform.render_v0(data)


def test_distro_bundles_need_no_root_host() -> None:
    assert platform.render_v0({"bundle-name": "distro-hosted"}).bundle == "distro-hosted"


def _package(variant: str, **values: object) -> dict:
    publishing = {"host": "example.org", "apiServerEndpoint": "https://10.0.0.10:6443"}
    return {
        "spec": {
            "variant": variant,
            "components": {"platform": {"values": {"publishing": publishing, **values}}},
        }
    }


@pytest.mark.parametrize(
    ("variant", "bundle"),
    [("isp-full", "paas-full"), ("isp-full-generic", "paas-full"), ("isp-hosted", "paas-hosted")],
)
def test_v1_variants_reuse_the_v0_lists(variant: str, bundle: str) -> None:
    rendered = platform.render_v1(_package(variant))
    assert rendered.bundle == bundle
    assert rendered.root_host == "example.org"


def test_v1_refusals_and_package_names() -> None:
    with pytest.raises(platform.RenderError, match="VariantNotFound"):
        platform.render_v1(_package("distro-full"))
    with pytest.raises(platform.RenderError, match=r"publishing\.host"):
        platform.render_v1({"spec": {"variant": "isp-full"}})
    rendered = platform.render_v1(
        _package(
            "isp-full",
            bundles={"enabledPackages": ["cozystack.velero"], "disabledPackages": ["cozystack.metallb"]},
        )
    )
    assert rendered.release("velero") is not None
    assert rendered.release("metallb") is None


def test_namespaces_cover_every_release_and_the_fixed_ones() -> None:
    rendered = platform.render_v0({"bundle-name": "distro-hosted"})
    assert {"cozy-system", "cozy-public", "tenant-root"} <= set(rendered.namespaces)
    assert {r.namespace for r in rendered.releases} <= set(rendered.namespaces)


@pytest.mark.parametrize(
    "name",
    upstream.FLUX_CRDS
    + upstream.PACKAGE_CRDS
    + upstream.METALLB_CRDS
    + upstream.PIRAEUS_CRDS
    + upstream.KUBEVIRT_CRDS
    + upstream.CDI_CRDS,
)
def test_every_served_crd_is_read_from_the_copied_upstream_files(name: str) -> None:
    crd = upstream.crd(name)
    plural, _, group = name.partition(".")
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["plural"] == plural
    assert any(v.get("served") for v in crd["spec"]["versions"])
