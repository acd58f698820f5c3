"""Machine configs: schema-valid for 1.11 and 1.13, Cozystack settings, CAs, determinism."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from talos_helpers import load_docs, schema_errors

from provisioner.errors import InputError
from provisioner.talos.configs import generate_configs, render_node_config
from provisioner.talos.pki import b64
from provisioner.talos.secrets import SecretsBundle, load_secrets

VERSIONS = ["v1.11.6", "v1.13.0"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_validates_against_the_official_schema(make_site, validators, version: str) -> None:
    site = make_site(version=version)
    paths = generate_configs(site)
    assert set(paths) == {"cp1", "cp2", "cp3", "w1"}
    validator = validators[version]
    for name, path in paths.items():
        docs = load_docs(path)
        assert docs[0]["version"] == "v1alpha1"
        for doc in docs:
            assert schema_errors(validator, doc) == [], f"{name}: {doc.get('kind', 'v1alpha1')}"


def test_the_1_13_contract_rejects_the_1_11_layout(make_site, validators) -> None:
    """Guards the test above: the 1.13 schema really refuses machine.network, so passing
    it means the 1.12+ documents are in use, not that the schema is lax."""
    docs = load_docs(generate_configs(make_site(version="v1.11.6"))["cp1"])
    errors = schema_errors(validators["v1.13.0"], docs[0])
    assert errors, "1.13 schema accepted a 1.11-style config"


def _doc(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, kind
    return found[0]


def test_1_13_moves_network_hostname_time_and_vip_into_documents(make_site) -> None:
    paths = generate_configs(make_site(version="v1.13.0"))
    cp = load_docs(paths["cp1"])
    main = cp[0]
    assert "network" not in main["machine"] and "time" not in main["machine"]
    assert not {"rbac", "stableHostname", "apidCheckExtKeyUsage"} & set(main["machine"]["features"])
    hostname = {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": "cp1"}
    assert _doc(cp, "HostnameConfig") == hostname
    alias = _doc(cp, "LinkAliasConfig")
    assert alias["selector"]["match"] == 'mac(link.permanent_addr) == "52:54:00:77:00:11"'
    link = _doc(cp, "LinkConfig")
    assert link["name"] == alias["name"]
    assert link["addresses"] == [{"address": "192.168.77.11/24"}]
    assert link["routes"] == [{"gateway": "192.168.77.1"}]
    assert _doc(cp, "Layer2VIPConfig") == {"apiVersion": "v1alpha1", "kind": "Layer2VIPConfig",
                                           "name": "192.168.77.10", "link": alias["name"]}
    assert _doc(cp, "ResolverConfig")["nameservers"] == [{"address": "192.168.77.1"}]
    assert _doc(cp, "TimeSyncConfig")["ntp"]["servers"] == ["192.168.77.1"]
    worker = load_docs(paths["w1"])
    assert not [d for d in worker if d.get("kind") == "Layer2VIPConfig"]
    assert _doc(worker, "HostnameConfig")["hostname"] == "w1"


def test_1_11_layout_what_the_lab_stand_in_reads(make_site) -> None:
    site = make_site(version="v1.11.6")
    paths = generate_configs(site)
    docs = load_docs(paths["cp2"])
    assert len(docs) == 1
    m = docs[0]["machine"]
    assert m["type"] == "controlplane"
    image = "ghcr.io/cozystack/cozystack/talos:v1.11.6"
    extra = site.cluster.talos.extra_kernel_args
    assert extra, "the lab inventory passes the stand-in's install sources as extra kernel args"
    assert m["install"] == {"disk": "/dev/vda", "image": image, "wipe": False, "extraKernelArgs": extra}
    assert m["network"]["hostname"] == "cp2"
    (iface,) = m["network"]["interfaces"]
    assert iface["deviceSelector"] == {"hardwareAddr": "52:54:00:77:00:12"}
    assert "interface" not in iface  # no guessed NIC name
    assert iface["addresses"] == ["192.168.77.12/24"]
    assert iface["routes"] == [{"network": "0.0.0.0/0", "gateway": "192.168.77.1"}]
    assert iface["vip"] == {"ip": "192.168.77.10"}
    assert m["network"]["nameservers"] == ["192.168.77.1"]
    assert m["time"]["servers"] == ["192.168.77.1"]
    assert m["features"]["kubePrism"] == {"enabled": True, "port": 7445}
    c = docs[0]["cluster"]
    assert c["controlPlane"]["endpoint"] == "https://192.168.77.10:6443"
    assert c["clusterName"] == "lab"
    w = load_docs(paths["w1"])[0]["machine"]["network"]["interfaces"][0]
    assert "vip" not in w


def test_cozystack_required_settings(make_site) -> None:
    paths = generate_configs(make_site())
    for name in ("cp1", "w1"):
        main = load_docs(paths[name])[0]
        m, c = main["machine"], main["cluster"]
        modules = {mod["name"]: mod.get("parameters", []) for mod in m["kernel"]["modules"]}
        assert set(modules) == {"openvswitch", "drbd", "zfs", "spl", "vfio_pci", "vfio_iommu_type1"}
        assert modules["drbd"] == ["usermode_helper=disabled"]
        assert m["sysctls"] == {"net.ipv4.neigh.default.gc_thresh1": "4096",
                                "net.ipv4.neigh.default.gc_thresh2": "8192",
                                "net.ipv4.neigh.default.gc_thresh3": "16384"}
        assert m["kubelet"]["nodeIP"]["validSubnets"] == ["192.168.77.0/24"]
        assert m["kubelet"]["extraConfig"]["maxPods"] == 512
        assert m["install"]["image"] == "ghcr.io/cozystack/cozystack/talos:v1.11.6"
        files = {f["path"]: f["content"] for f in m["files"]}
        cri = files["/etc/cri/conf.d/20-customization.part"]
        assert "device_ownership_from_security_context = true" in cri
        lvm = files["/etc/lvm/lvm.conf"]
        for dev in ("drbd", "dm-", "zd", "loop"):
            assert f'"r|^/dev/{dev}' in lvm
        assert c["network"]["cni"] == {"name": "none"}
        assert c["network"]["dnsDomain"] == "cozy.local"
        assert c["network"]["podSubnets"] == ["10.244.0.0/16"]
        assert c["network"]["serviceSubnets"] == ["10.96.0.0/16"]
        assert c["discovery"]["enabled"] is False
    c = load_docs(paths["cp1"])[0]["cluster"]
    assert c["allowSchedulingOnControlPlanes"] is True
    assert c["proxy"]["disabled"] is True
    assert c["controllerManager"]["extraArgs"]["bind-address"] == "0.0.0.0"
    assert c["scheduler"]["extraArgs"]["bind-address"] == "0.0.0.0"
    assert c["etcd"]["advertisedSubnets"] == ["192.168.77.0/24"]
    assert {"127.0.0.1", "192.168.77.10"} <= set(c["apiServer"]["certSANs"])


@pytest.mark.parametrize("version", VERSIONS)
def test_configs_embed_the_bundles_cas_and_workers_no_keys(make_site, version: str) -> None:
    site = make_site(version=version)
    paths = generate_configs(site)
    bundle: SecretsBundle = load_secrets(site.state_dir / "secrets.yaml")
    cas = set()
    for name in ("cp1", "cp2", "cp3"):
        main = load_docs(paths[name])[0]
        m, c = main["machine"], main["cluster"]
        assert m["ca"] == {"crt": b64(bundle.os.crt), "key": b64(bundle.os.key)}
        assert c["ca"] == {"crt": b64(bundle.k8s.crt), "key": b64(bundle.k8s.key)}
        agg = bundle.k8s_aggregator
        assert c["aggregatorCA"] == {"crt": b64(agg.crt), "key": b64(agg.key)}
        assert c["serviceAccount"] == {"key": b64(bundle.k8s_service_account.key)}
        assert c["etcd"]["ca"] == {"crt": b64(bundle.etcd.crt), "key": b64(bundle.etcd.key)}
        assert m["token"] == bundle.trustd_token and c["token"] == bundle.bootstrap_token
        assert c["id"] == bundle.cluster_id and c["secret"] == bundle.cluster_secret
        assert c["secretboxEncryptionSecret"] == bundle.secretbox_encryption_secret
        cas.add((m["ca"]["crt"], c["ca"]["crt"], c["etcd"]["ca"]["crt"]))
    assert len(cas) == 1
    worker_text = paths["w1"].read_text()
    worker = load_docs(paths["w1"])[0]
    assert worker["machine"]["ca"] == {"crt": b64(bundle.os.crt)}
    assert worker["cluster"]["ca"] == {"crt": b64(bundle.k8s.crt)}
    cp_only = ("aggregatorCA", "serviceAccount", "etcd", "apiServer", "secretboxEncryptionSecret", "proxy")
    for absent in cp_only:
        assert absent not in worker["cluster"]
    for key in (bundle.os.key, bundle.k8s.key, bundle.etcd.key, bundle.k8s_aggregator.key,
                bundle.k8s_service_account.key):
        assert b64(key) not in worker_text
    assert base64.b64encode(b"-----BEGIN").decode()[:12] in worker_text  # the crts are there


def test_output_is_deterministic_and_private(make_site) -> None:
    site = make_site()
    paths = generate_configs(site)
    first = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in paths.items()}
    talosconfig = site.state_dir / "talosconfig"
    tc = talosconfig.read_bytes()
    again = generate_configs(site)
    for name, path in again.items():
        assert path.stat().st_mode & 0o777 == 0o600
        assert (path.read_bytes(), path.stat().st_mtime_ns) == first[name]  # byte-identical, untouched
    assert talosconfig.read_bytes() == tc
    assert talosconfig.stat().st_mode & 0o777 == 0o600
    assert (site.state_dir / "configs").stat().st_mode & 0o777 == 0o700
    bundle = load_secrets(site.state_dir / "secrets.yaml")
    # the pure renderer agrees with the files
    assert render_node_config(site, bundle, site.node("cp3")) == first["cp3"][0]


def test_selection_writes_only_those_nodes(make_site) -> None:
    site = make_site()
    paths = generate_configs(site, ["w1"])
    assert list(paths) == ["w1"]
    assert sorted(p.name for p in (site.state_dir / "configs").iterdir()) == ["w1.yaml"]


def test_labels_and_install_disk_per_node(make_site) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nodes"][3]["labels"] = {"topology.kubernetes.io/zone": "rack-a"}
        data["nodes"][3]["install_disk"] = "/dev/nvme0n1"

    paths = generate_configs(make_site(edit=edit))
    m = load_docs(paths["w1"])[0]["machine"]
    assert m["nodeLabels"] == {"topology.kubernetes.io/zone": "rack-a"}
    assert m["install"]["disk"] == "/dev/nvme0n1"


def test_hosted_site_without_networks_is_refused(make_site, tmp_path: Path) -> None:
    site = make_site()
    site = site.model_copy(update={"networks": None})
    with pytest.raises(InputError, match=r"networks\.management is required"):
        generate_configs(site)
