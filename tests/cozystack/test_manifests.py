"""The objects the platform stage applies, derived from the inventory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from platform_sites import data, load

from provisioner.cozystack import manifests
from provisioner.lab import platform_assets


def test_configmap_has_every_key_from_the_inventory(tmp_path: Path) -> None:
    doc = data(
        platform={
            "expose_services": ["api", "dashboard", "vm-exportproxy"],
            "bundle_enable": ["velero", "external-dns"],
            "bundle_disable": ["goldpinger"],
            "values": {"kubevirt": {"cpuAllocationRatio": 4}},
            "telemetry_enabled": False,
        }
    )
    doc["networks"]["pod_cidr"] = "10.100.0.0/16"
    doc["networks"]["pod_gateway"] = "10.100.0.1"
    doc["cluster"]["cluster_domain"] = "cozy.example"
    cm = manifests.configmap(load(tmp_path, doc).site)
    assert cm["metadata"] == {"name": "cozystack", "namespace": "cozy-system"}
    assert cm["data"] == {
        "bundle-name": "paas-full",
        "root-host": "t.example.com",
        "api-server-endpoint": "https://10.9.0.10:6443",
        "ipv4-pod-cidr": "10.100.0.0/16",
        "ipv4-pod-gateway": "10.100.0.1",
        "ipv4-svc-cidr": "10.96.0.0/16",
        "ipv4-join-cidr": "100.64.0.0/16",
        "cluster-domain": "cozy.example",
        "expose-services": "api,dashboard,vm-exportproxy",
        "expose-ingress": "tenant-root",
        "oidc-enabled": "false",
        "telemetry-enabled": "false",
        "bundle-enable": "velero,external-dns",
        "bundle-disable": "goldpinger",
        "values-kubevirt": "cpuAllocationRatio: 4\n",
    }


def test_external_ips_disable_metallb(tmp_path: Path) -> None:
    doc = data(platform={"expose_external_ips": ["10.9.0.11", "10.9.0.12"]})
    del doc["networks"]["metallb"]
    site = load(tmp_path, doc).site
    cm = manifests.configmap(site)
    assert cm["data"]["expose-external-ips"] == "10.9.0.11,10.9.0.12"
    assert cm["data"]["bundle-disable"] == "metallb"
    assert manifests.metallb_objects(site) == []


def test_system_namespace_labels_as_upstream() -> None:
    ns = manifests.system_namespace()
    assert ns["metadata"]["labels"] == {
        "cozystack.io/system": "true",
        "pod-security.kubernetes.io/enforce": "privileged",
    }


@pytest.mark.parametrize(("bundle", "variant"), [("paas-full", "isp-full"), ("paas-hosted", "isp-hosted")])
def test_v1_package(tmp_path: Path, bundle: str, variant: str) -> None:
    doc = data(bundle, platform={"bundle_enable": ["cozystack.velero"]})
    doc["cluster"]["cozystack_version"] = "v1.6.2"
    site = load(tmp_path, doc).site
    pkg = manifests.platform_package(site)
    assert pkg["metadata"] == {"name": "cozystack.cozystack-platform"}
    assert pkg["spec"]["variant"] == variant
    values = pkg["spec"]["components"]["platform"]["values"]
    assert values["networking"]["podCIDR"] == "10.244.0.0/16"
    assert values["networking"]["joinCIDR"] == "100.64.0.0/16"
    assert values["publishing"]["host"] == doc["cluster"]["root_host"]
    assert values["publishing"]["apiServerEndpoint"].startswith("https://")
    assert values["publishing"]["exposedServices"] == ["api", "dashboard"]
    assert values["bundles"] == {"enabledPackages": ["cozystack.velero"]}


@pytest.mark.parametrize("endpoint", ["https://203.0.113.5:6443", "https://api.example.org"])
def test_hosted_installer_points_at_the_real_endpoint(endpoint: str) -> None:
    docs = platform_assets.installer_v0("v0.41.11")
    out = manifests.point_installer_at(docs, endpoint)
    env = {e["name"]: e.get("value") for e in out[-1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    host, port = manifests.api_host_port(endpoint)
    assert env["KUBERNETES_SERVICE_HOST"] == host != "localhost"
    assert env["KUBERNETES_SERVICE_PORT"] == port == ("6443" if ":6443" in endpoint else "443")
    original = {
        e["name"]: e.get("value") for e in docs[-1]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert original["KUBERNETES_SERVICE_HOST"] == "localhost"  # the input is left alone


@pytest.mark.parametrize(
    ("pool_type", "key", "value"),
    [
        ("zfs", "zfsPool", {"zPool": "fast"}),
        ("lvm-thin", "lvmThinPool", {"volumeGroup": "fast", "thinPool": "fast"}),
    ],
)
def test_satellite_configurations_per_node(tmp_path: Path, pool_type: str, key: str, value: dict) -> None:
    site = load(tmp_path, data(platform={"storage": {"pool_type": pool_type, "pool_name": "fast"}})).site
    lscs = manifests.satellite_configurations(site)
    assert [x["metadata"]["name"] for x in lscs] == [f"provisioner-storage-n{i}" for i in (11, 12, 13, 21)]
    n12 = lscs[1]["spec"]
    assert n12["nodeSelector"] == {"kubernetes.io/hostname": "n12"}
    assert n12["storagePools"] == [
        {"name": "fast", key: value, "source": {"hostDevices": ["/dev/sdb", "/dev/sdc"]}}
    ]


@pytest.mark.parametrize(("with_disks", "autoplace"), [(4, "3"), (3, "3"), (2, "2"), (1, "1")])
def test_storage_classes(tmp_path: Path, with_disks: int, autoplace: str) -> None:
    doc = data()
    for i, node in enumerate(doc["nodes"]):
        if i >= with_disks:
            node["data_disks"] = []
    local, replicated = manifests.storage_classes(load(tmp_path, doc).site)
    assert local["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert local["volumeBindingMode"] == "WaitForFirstConsumer"
    assert local["parameters"]["linstor.csi.linbit.com/layerList"] == "storage"
    assert replicated["volumeBindingMode"] == "Immediate"
    assert replicated["parameters"]["linstor.csi.linbit.com/layerList"] == "drbd storage"
    assert replicated["parameters"]["linstor.csi.linbit.com/autoPlace"] == autoplace
    assert local["parameters"]["linstor.csi.linbit.com/storagePool"] == "data"


def test_metallb_pool(tmp_path: Path) -> None:
    pool, l2 = manifests.metallb_objects(load(tmp_path, data()).site)
    assert pool["metadata"] == {"name": "cozystack", "namespace": "cozy-metallb"}
    assert pool["spec"]["addresses"] == ["10.9.0.100-10.9.0.150"]
    assert l2["spec"] == {"ipAddressPools": ["cozystack"]}


def test_tenants_parent_first_in_parent_namespace(tmp_path: Path) -> None:
    tenants = manifests.tenant_objects(load(tmp_path, data()).site)
    assert [(t["metadata"]["namespace"], t["metadata"]["name"]) for t in tenants] == [
        ("tenant-root", "root"),
        ("tenant-root", "team"),
        ("tenant-team", "dev"),
    ]
    root = tenants[0]["spec"]
    assert root["host"] == "t.example.com" and root["etcd"] and root["ingress"] and root["monitoring"]
    assert tenants[1]["spec"]["host"] == "" and tenants[1]["spec"]["ingress"] is True
    assert "isolated" not in manifests.tenant_objects(load(tmp_path, data()).site, v1=True)[0]["spec"]


def test_builders_are_deterministic(tmp_path: Path) -> None:
    a = load(tmp_path, data()).site
    b = load(tmp_path, data()).site
    dump = lambda s: yaml.safe_dump(  # noqa: E731
        [manifests.configmap(s), *manifests.storage_classes(s), *manifests.tenant_objects(s)]
    )
    assert dump(a) == dump(b)
