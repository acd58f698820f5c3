"""The platform inputs of the inventory: defaults, and impossible combinations as exit-2 errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from platform_sites import data, load

from provisioner.cli import main
from provisioner.inventory import InventoryError


def errors(tmp_path: Path, doc: dict) -> str:
    with pytest.raises(InventoryError) as exc:
        load(tmp_path, doc)
    return str(exc.value)


def test_defaults(tmp_path: Path) -> None:
    site = load(tmp_path, data()).site
    assert site.platform.expose_services == ["api", "dashboard"]
    assert site.platform.storage.pool_name == "data"
    assert site.platform.storage.pool_type.value == "zfs"
    assert site.cluster.timeouts.platform == 3600


@pytest.mark.parametrize("bundle", ["distro-full", "distro-hosted"])
def test_bundle_without_v1_variant_names_alternatives(tmp_path: Path, bundle: str) -> None:
    doc = data(bundle)
    doc["cluster"]["cozystack_version"] = "v1.6.2"
    text = errors(tmp_path, doc)
    assert "site.yaml:" in text and "cluster.cozystack_version" in text
    assert f"bundle {bundle} has no variant in Cozystack v1.6.2" in text
    assert "paas-full (variant isp-full)" in text and "paas-hosted (variant isp-hosted)" in text
    assert "v0.41.11" in text


@pytest.mark.parametrize("bundle", ["paas-full", "paas-hosted"])
def test_v1_variants_are_accepted(tmp_path: Path, bundle: str) -> None:
    doc = data(bundle)
    doc["cluster"]["cozystack_version"] = "v1.6.2"
    assert load(tmp_path, doc).site.cluster.cozystack_version == "v1.6.2"


def test_unknown_and_non_optional_enable(tmp_path: Path) -> None:
    doc = data(platform={"bundle_enable": ["velerox", "cilium"], "bundle_disable": ["nosuch"]})
    text = errors(tmp_path, doc)
    assert (
        "platform.bundle_enable[0]: 'velerox' is not a release of bundle paas-full; did you mean 'velero'?"
        in text
    )
    assert "platform.bundle_enable[1]: 'cilium' is installed by bundle paas-full anyway" in text
    assert "platform.bundle_disable[0]: 'nosuch'" in text


def test_enabling_without_its_optional_dependency(tmp_path: Path) -> None:
    doc = data("distro-full", platform={"bundle_enable": ["monitoring-agents"]})
    text = errors(tmp_path, doc)
    assert "depends on victoria-metrics-operator" in text
    assert "add victoria-metrics-operator to bundle_enable" in text
    doc = data("distro-full", platform={"bundle_enable": ["monitoring-agents", "victoria-metrics-operator"]})
    assert load(tmp_path, doc).site.platform.bundle_enable == [
        "monitoring-agents",
        "victoria-metrics-operator",
    ]


def test_values_for_unknown_component(tmp_path: Path) -> None:
    text = errors(tmp_path, data(platform={"values": {"kubevrt": {"a": 1}}}))
    assert (
        "platform.values.kubevrt: 'kubevrt' is not a release of bundle paas-full; did you mean 'kubevirt'?"
        in text
    )


def test_metallb_range_and_external_ips_exclude_each_other(tmp_path: Path) -> None:
    text = errors(tmp_path, data(platform={"expose_external_ips": ["10.9.0.11"]}))
    assert "platform.expose_external_ips: choose one way to publish the ingress" in text
    doc = data(platform={"expose_external_ips": ["10.9.0.11"]})
    del doc["networks"]["metallb"]
    assert [str(ip) for ip in load(tmp_path, doc).site.platform.expose_external_ips] == ["10.9.0.11"]


@pytest.mark.parametrize(
    ("platform", "field", "words"),
    [
        ({"storage": {"pool_type": "lvm"}}, "platform.storage.pool_type", "zfs"),
        ({"storage": {"pool_name": "a"}}, "platform.storage.pool_name", "3-48"),
        ({"expose_services": ["api", "grafana"]}, "platform.expose_services", "cannot be exposed"),
        ({"expose_external_ips": ["10.9.0"]}, "platform.expose_external_ips", "not a valid IP"),
        ({"bundle_enabl": ["x"]}, "platform.bundle_enabl", "did you mean 'bundle_enable'"),
    ],
)
def test_bad_values_are_located(tmp_path: Path, platform: dict, field: str, words: str) -> None:
    text = errors(tmp_path, data(platform=platform))
    assert field in text and words in text


def test_v1_enable_takes_package_names(tmp_path: Path) -> None:
    doc = data(platform={"bundle_enable": ["velero"]})
    doc["cluster"]["cozystack_version"] = "v1.6.2"
    assert "must be a package name like cozystack.velero" in errors(tmp_path, doc)


def test_bad_timeout(tmp_path: Path) -> None:
    doc = data()
    doc["cluster"]["timeouts"] = {"platform": 0}
    assert "cluster.timeouts.platform" in errors(tmp_path, doc)


def test_validate_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = data("distro-full")
    doc["cluster"]["cozystack_version"] = "v1.6.2"
    load_path = tmp_path / "site.yaml"
    import yaml

    load_path.write_text(yaml.safe_dump(doc))
    assert main(["-i", str(load_path), "validate"]) == 2
    assert "has no variant" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["hosted.yaml", "hosted-v1.yaml", "lab.yaml"])
def test_examples_validate(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parents[2] / "inventory" / "examples" / name
    assert main(["-i", str(path), "validate"]) == 0, capsys.readouterr().err


def test_expose_ingress_must_be_a_tenant_running_an_ingress(tmp_path: Path) -> None:
    text = errors(tmp_path, data(platform={"expose_ingress": "tenant-dev"}))
    assert "platform.expose_ingress: 'tenant-dev' is not a tenant namespace that runs an ingress" in text
    assert "(tenants with ingress: tenant-root, tenant-team)" in text
    assert (
        load(tmp_path, data(platform={"expose_ingress": "tenant-team"})).site.platform.expose_ingress
        == "tenant-team"
    )
