"""User patches (strategic merge and JSON6902) and the semantic checks they can trip."""

from __future__ import annotations

from pathlib import Path

import netaddr
import pytest
from talos_helpers import load_docs

from provisioner.errors import InputError
from provisioner.inventory import InventoryError
from provisioner.talos.configs import generate_configs
from provisioner.talos.patches import apply_json6902, merge, parse_patch


def test_strategic_merge_semantics() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "keep": {"x": 1},
            "cluster": {"network": {"podSubnets": ["10.244.0.0/16"]}}}
    patch = {"a": {"b": 2, "c": [2, 3], "d": {"$patch": "delete"}}, "gone": {"$patch": "delete"},
             "cluster": {"network": {"podSubnets": ["10.10.0.0/16"]}}}
    out = merge(base, patch)
    assert out["a"] == {"b": 2, "c": [1, 2, 3]}  # lists append without duplicates
    assert out["cluster"]["network"]["podSubnets"] == ["10.10.0.0/16"]  # Talos replaces subnet lists
    assert out["keep"] is base["keep"]  # untouched subtrees are shared, not copied
    assert base["a"] == {"b": 1, "c": [1, 2]}  # nothing modified in place
    assert merge({"a": {"b": 1}, "z": 1}, {"a": {"$patch": "delete"}}) == {"z": 1}


def test_interfaces_merge_by_selector() -> None:
    sel = {"deviceSelector": {"hardwareAddr": "52:54:00:00:00:01"}}
    base = {"machine": {"network": {"interfaces": [{**sel, "mtu": 1500, "addresses": ["10.0.0.2/24"]}]}}}
    out = merge(base, {"machine": {"network": {"interfaces": [{**sel, "mtu": 9000}, {"interface": "eth9"}]}}})
    ifaces = out["machine"]["network"]["interfaces"]
    assert ifaces[0] == {**sel, "mtu": 9000, "addresses": ["10.0.0.2/24"]}
    assert ifaces[1] == {"interface": "eth9"}


def test_json6902_operations() -> None:
    doc = {"machine": {"install": {"disk": "/dev/sda"}, "list": [1, 2]}, "cluster": {}}
    ops = [
        {"op": "replace", "path": "/machine/install/disk", "value": "/dev/nvme0n1"},
        {"op": "add", "path": "/machine/list/-", "value": 3},
        {"op": "add", "path": "/machine/list/0", "value": 0},
        {"op": "copy", "from": "/machine/install", "path": "/cluster/install"},
        {"op": "move", "from": "/cluster/install/disk", "path": "/cluster/disk"},
        {"op": "remove", "path": "/machine/list/1"},
        {"op": "test", "path": "/cluster/disk", "value": "/dev/nvme0n1"},
        {"op": "add", "path": "/a~1b", "value": True},
    ]
    out = apply_json6902(doc, ops, "p")
    assert out == {"machine": {"install": {"disk": "/dev/nvme0n1"}, "list": [0, 2, 3]},
                   "cluster": {"install": {}, "disk": "/dev/nvme0n1"}, "a/b": True}
    assert doc["machine"]["install"]["disk"] == "/dev/sda"
    with pytest.raises(InputError, match=r"p: JSON patch operation 0: /machine/nope does not exist"):
        apply_json6902(doc, [{"op": "remove", "path": "/machine/nope"}], "p")
    with pytest.raises(InputError, match="test of /machine/install/disk failed"):
        apply_json6902(doc, [{"op": "test", "path": "/machine/install/disk", "value": "x"}], "p")


def test_patch_file_shapes() -> None:
    assert parse_patch("- op: add\n  path: /x\n  value: 1\n", "f").json6902
    assert parse_patch("machine: {}\n---\napiVersion: v1alpha1\nkind: HostnameConfig\n", "f").strategic
    with pytest.raises(InputError, match="f: JSON patch operation 0: unknown op 'frobnicate'"):
        parse_patch("- op: frobnicate\n  path: /x\n", "f")
    with pytest.raises(InputError, match="f: not valid YAML line"):
        parse_patch("machine: [\n", "f")


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return name  # relative to the inventory, like operators write them


def test_cluster_and_node_patches_apply_in_order(make_site, tmp_path: Path) -> None:
    cluster = _write(tmp_path, "cluster.yaml",
                     "machine:\n  sysctls:\n    vm.nr_hugepages: '1024'\n"
                     "cluster:\n  apiServer:\n    extraArgs:\n      feature-gates: Foo=true\n")
    json_patch = _write(tmp_path, "disk.yaml",
                        "- op: replace\n  path: /machine/install/disk\n  value: /dev/sdz\n")
    node = _write(tmp_path, "w1.yaml", "machine:\n  nodeLabels:\n    role: storage\n")
    site = make_site(cluster_patches=[cluster], node_patches={"w1": [json_patch, node]})
    paths = generate_configs(site)
    cp = load_docs(paths["cp1"])[0]
    assert cp["machine"]["sysctls"]["vm.nr_hugepages"] == "1024"
    assert cp["machine"]["sysctls"]["net.ipv4.neigh.default.gc_thresh1"] == "4096"
    assert cp["cluster"]["apiServer"]["extraArgs"] == {"feature-gates": "Foo=true"}
    assert cp["machine"]["install"]["disk"] == "/dev/vda"
    w = load_docs(paths["w1"])[0]
    assert w["machine"]["install"]["disk"] == "/dev/sdz"
    assert w["machine"]["nodeLabels"] == {"role": "storage"}
    assert w["machine"]["sysctls"]["vm.nr_hugepages"] == "1024"
    assert "apiServer" in w["cluster"]  # a strategic patch adds what it names, on workers too


def test_1_13_document_patches_merge_by_kind(make_site, tmp_path: Path) -> None:
    patch = _write(tmp_path, "mtu.yaml", "apiVersion: v1alpha1\nkind: LinkConfig\nname: mgmt0\nmtu: 9000\n"
                   "---\napiVersion: v1alpha1\nkind: TimeSyncConfig\n$patch: delete\n")
    site = make_site(version="v1.13.0", cluster_patches=[patch])
    docs = load_docs(generate_configs(site)["cp1"])
    link = [d for d in docs if d.get("kind") == "LinkConfig"]
    assert len(link) == 1 and link[0]["mtu"] == 9000
    assert link[0]["addresses"] == [{"address": "192.168.77.11/24"}]
    assert not [d for d in docs if d.get("kind") == "TimeSyncConfig"]


def test_missing_patch_file_names_the_field(make_site, tmp_path: Path) -> None:
    # At the door: validation names the inventory line (see tests/reliability for more cases).
    where = r"site\.yaml:\d+: nodes\[1\]\.config_patches\[0\]: "
    with pytest.raises(InventoryError, match=where + r"patch file .*nope\.yaml does not exist"):
        make_site(node_patches={"cp2": ["nope.yaml"]})
    # A file removed after validation: the configs stage still names the field.
    (tmp_path / "gone.yaml").write_text("machine: {}\n")
    site = make_site(node_patches={"cp2": ["gone.yaml"]})
    (tmp_path / "gone.yaml").unlink()
    with pytest.raises(InputError, match=r"nodes\[cp2\]\.config_patches\[0\].*cannot read"):
        generate_configs(site)


@pytest.mark.parametrize(
    ("patch", "node", "message"),
    [
        ("machine:\n  kubelet:\n    nodeIP:\n      validSubnets: [10.0.0.0/8]\n", "cp1",
         r"cp1: machine\.kubelet\.nodeIP\.validSubnets does not contain the node address 192\.168\.77\.11"),
        ("cluster:\n  etcd:\n    advertisedSubnets: [10.0.0.0/8]\n", "cp2",
         r"cp2: cluster\.etcd\.advertisedSubnets does not contain"),
        ("- op: replace\n  path: /cluster/apiServer/certSANs\n  value: [127.0.0.1]\n", "cp3",
         r"cp3: cluster\.apiServer\.certSANs lacks the control-plane endpoint host 192\.168\.77\.10"),
        ("machine:\n  network:\n    interfaces:\n"
         "      - deviceSelector: {hardwareAddr: '52:54:00:77:00:11'}\n        vip: {ip: 10.9.9.9}\n", "cp1",
         r"cp1: the VIP 10\.9\.9\.9 is outside the subnet"),
        ("- op: remove\n  path: /machine/network/interfaces/0/vip\n", "cp1",
         r"cp1: the control-plane VIP 192\.168\.77\.10 is not configured"),
        ("machine:\n  ca:\n    key: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCg==\n", "w1",
         r"w1: worker config carries private key material at machine\.ca\.key"),
        ("cluster:\n  etcd:\n    ca:\n      crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n", "cp2",
         r"cp2: cluster\.etcd\.ca\.crt differs from the cluster secrets bundle"),
    ],
)
def test_semantic_checks_refuse_broken_configs(make_site, tmp_path: Path, patch: str, node: str,
                                               message: str) -> None:
    site = make_site(node_patches={node: [_write(tmp_path, "p.yaml", patch)]})
    with pytest.raises(InputError, match=message) as info:
        generate_configs(site)
    assert not (site.state_dir / "configs").exists()  # nothing written when a check fails
    assert "PRIVATE" not in str(info.value) and "LS0tLS1" not in str(info.value)


def test_vip_outside_the_node_subnet_is_caught(make_site) -> None:
    """The inventory layer refuses this too; the config checks must not rely on it (a patch
    or a hand-built Site can get there), so the Site is altered after loading."""
    site = make_site()
    nets = site.networks
    mgmt = nets.management.model_copy(update={"vip": netaddr.IPAddress("192.168.78.10")})
    site = site.model_copy(update={"networks": nets.model_copy(update={"management": mgmt})})
    with pytest.raises(InputError, match=r"cp1: the VIP 192\.168\.78\.10 is outside the subnet"):
        generate_configs(site)


def test_inline_patches_in_the_inventory_apply_like_files(make_site, tmp_path: Path) -> None:
    """A patch may sit in the inventory itself (as talosctl's --config-patch takes inline YAML)."""
    etcd = {"cluster": {"etcd": {"extraArgs": {"heartbeat-interval": "500", "election-timeout": "5000"}}}}
    node_file = _write(tmp_path, "w1.yaml", "machine:\n  nodeLabels:\n    role: storage\n")
    site = make_site(
        cluster_patches=[etcd],
        node_patches={"w1": [node_file, {"machine": {"nodeLabels": {"role": "compute"}}}]},
    )
    paths = generate_configs(site)
    cp = load_docs(paths["cp1"])[0]
    assert cp["cluster"]["etcd"]["extraArgs"] == {"heartbeat-interval": "500", "election-timeout": "5000"}
    assert cp["cluster"]["etcd"]["advertisedSubnets"] == ["192.168.77.0/24"]  # merged, not replaced
    w = load_docs(paths["w1"])[0]
    assert w["machine"]["nodeLabels"] == {"role": "compute"}  # the inline patch came after the file
