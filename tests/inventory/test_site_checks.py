"""Cross-checks, loader details and directory merging, one rule at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from inventory_sites import BASE, node, site, write

from provisioner.errors import InputError
from provisioner.inventory import InventoryError, Problem, load_inventory
from provisioner.inventory.model import SecretRef


def problems(tmp_path: Path, data: Any) -> list[Problem]:
    with pytest.raises(InventoryError) as info:
        load_inventory(write(tmp_path / "site.yaml", data))
    return info.value.problems


def messages(tmp_path: Path, data: Any) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in problems(tmp_path, data)]


def test_base_is_valid(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path / "site.yaml", BASE))
    assert [n.name for n in inv.site.nodes] == ["n11", "n12", "n13", "n21"]
    assert inv.warnings == []
    assert inv.site.api_endpoint == "https://10.9.0.10:6443"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = site()
    data["nodes"][1]["ip"] = "10.9.0.11"  # duplicate
    data["nodes"][3]["ip"] = "10.9.5.1"  # outside the subnet
    data["networks"]["management"]["vip"] = "10.9.0.13"  # a node's IP
    got = messages(tmp_path, data)
    assert [p for p, _ in got] == ["networks.management.vip", "nodes[1].ip", "nodes[3].ip"]  # file order


@pytest.mark.parametrize(
    ("count", "ok"), [(1, True), (2, False), (3, True), (4, False), (5, True), (6, False), (7, False)]
)
def test_controlplane_quorum(tmp_path: Path, count: int, ok: bool) -> None:
    nodes = [node(11 + i, "controlplane") for i in range(count)] + [node(40)]
    data = site(nodes=nodes)
    if ok:
        assert len(load_inventory(write(tmp_path / "site.yaml", data)).site.controlplanes) == count
    else:
        got = messages(tmp_path, data)
        assert got[0][0] == "nodes"
        assert f"{count} control planes: use 1, 3 or 5" in got[0][1]
        assert ("even count" in got[0][1]) == (count % 2 == 0)


def test_single_controlplane_without_vip_uses_its_ip(tmp_path: Path) -> None:
    data = site(nodes=[node(11, "controlplane"), node(21)])
    del data["networks"]["management"]["vip"]
    assert load_inventory(write(tmp_path / "site.yaml", data)).site.api_endpoint == "https://10.9.0.11:6443"
    data["nodes"] = [node(11, "controlplane"), node(12, "controlplane"), node(13, "controlplane")]
    assert messages(tmp_path, data) == [
        (
            "cluster.api_server_endpoint",
            "bundle paas-full requires an API endpoint: "
            "set networks.management.vip or cluster.api_server_endpoint",
        )
    ]


def test_mac_and_uuid_duplicates_are_found_after_normalising(tmp_path: Path) -> None:
    data = site()
    data["nodes"][0]["boot"]["mac"] = "52-54-00-AB-CD-EF"
    data["nodes"][2]["boot"]["mac"] = "52:54:00:ab:cd:ef"
    got = messages(tmp_path, data)
    assert got == [("nodes[2].boot.mac", "boot MAC 52:54:00:ab:cd:ef is already used by node n11 (nodes[0])")]


def test_bmc_endpoint_is_protocol_address_and_port(tmp_path: Path) -> None:
    data = site()
    for i, n in enumerate(data["nodes"]):  # one BMC host, one port per node: like virtualbmc
        n["bmc"].update(address="10.9.1.1", port=6230 + i)
    load_inventory(write(tmp_path / "site.yaml", data))
    data["nodes"][3]["bmc"]["port"] = 6230
    assert messages(tmp_path, data) == [
        ("nodes[3].bmc.address", "BMC endpoint ipmi://10.9.1.1:6230 is already used by node n11 (nodes[0])")
    ]
    data["nodes"][3]["bmc"].update(protocol="redfish", port=None)  # redfish on 443: a different endpoint
    load_inventory(write(tmp_path / "site.yaml", data))


def test_ipv6_node_in_ipv4_subnet(tmp_path: Path) -> None:
    data = site()
    data["nodes"][3]["ip"] = "fd00::21"
    assert messages(tmp_path, data) == [
        ("nodes[3].ip", "fd00::21 is outside the management subnet 10.9.0.0/24")
    ]


def test_network_and_broadcast_addresses_are_refused(tmp_path: Path) -> None:
    data = site()
    data["nodes"][3]["ip"] = "10.9.0.255"
    assert messages(tmp_path, data) == [
        ("nodes[3].ip", "10.9.0.255 is the network or broadcast address of 10.9.0.0/24")
    ]


def test_missing_data_disks_warn_and_the_cli_prints_it_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioner.cli import main

    data = site()
    del data["nodes"][3]["data_disks"]
    path = write(tmp_path / "site.yaml", data)
    inv = load_inventory(path)
    assert [(w.path, w.severity) for w in inv.warnings] == [("nodes[3].data_disks", "warning")]
    assert main(["--inventory", str(path), "validate"]) == 0
    out, err = capsys.readouterr()
    assert "valid (4 nodes in 2 racks, bundle paas-full, 1 warnings)" in out
    assert "warning: " in err and "nodes[3].data_disks: node n21 has no data disks" in err
    assert f"{path}:" in err or "site.yaml:" in err


def test_no_data_disks_anywhere_is_an_error_for_linstor_bundles(tmp_path: Path) -> None:
    data = site()
    for n in data["nodes"]:
        del n["data_disks"]
    assert ("nodes", "bundle paas-full installs LINSTOR storage but no node lists data_disks") in messages(
        tmp_path, data
    )
    data["cluster"]["bundle"] = "distro-hosted"  # no LINSTOR, but hosted: the nodes are now the problem
    assert [p for p, _ in messages(tmp_path, data)] == ["cluster.bundle", "nodes"]


def test_metallb_missing_is_a_warning(tmp_path: Path) -> None:
    data = site()
    del data["networks"]["metallb"]
    inv = load_inventory(write(tmp_path / "site.yaml", data))
    assert [(w.path, w.message) for w in inv.warnings] == [
        ("networks", "bundle paas-full installs MetalLB: add networks.metallb.range")
    ]


def test_full_bundle_needs_nodes_and_netboot(tmp_path: Path) -> None:
    data = site(nodes=[])
    del data["networks"]["netboot"]
    assert messages(tmp_path, data) == [
        ("networks", "bundle paas-full network-boots its nodes: set networks.netboot.server"),
        ("nodes", "bundle paas-full installs Talos on bare metal: at least one node is required"),
    ]


def test_hosted_bundle_needs_endpoint(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "h", "bundle": "paas-hosted", "root_host": "h.example.com"},
        "hosted": {"kubeconfig": "kc"},
    }
    assert messages(tmp_path, data) == [
        ("cluster.api_server_endpoint", "bundle paas-hosted requires cluster.api_server_endpoint")
    ]
    data["cluster"]["api_server_endpoint"] = "https://api.h.example.com:6443"
    assert load_inventory(write(tmp_path / "site.yaml", data)).site.nodes == []


def test_full_bundle_refuses_hosted_section(tmp_path: Path) -> None:
    assert messages(tmp_path, site(hosted={"kubeconfig": "kc"})) == [
        ("hosted", "bundle paas-full provisions its own cluster; hosted.kubeconfig does not apply")
    ]


def test_duplicate_rack(tmp_path: Path) -> None:
    assert messages(tmp_path, site(racks=[{"name": "r1"}, {"name": "r2"}, {"name": "r1"}])) == [
        ("racks[2].name", "rack r1 is defined twice (also racks[0])")
    ]


def test_netboot_server_rules(tmp_path: Path) -> None:
    data = site()
    data["networks"]["netboot"]["server"] = "10.9.0.120"
    assert messages(tmp_path, data) == [
        ("networks.metallb.range", "MetalLB range contains the netboot server 10.9.0.120")
    ]
    data["networks"]["netboot"]["server"] = "10.9.0.10"
    assert messages(tmp_path, data) == [
        ("networks.netboot.server", "netboot server must not be the control-plane VIP")
    ]


def test_join_cidr_and_pod_gateway(tmp_path: Path) -> None:
    data = site()
    data["networks"]["join_cidr"] = "10.9.0.0/16"
    data["networks"]["pod_gateway"] = "10.245.0.1"
    assert messages(tmp_path, data) == [
        ("networks.join_cidr", "join network 10.9.0.0/16 overlaps the management network 10.9.0.0/24"),
        ("networks.pod_gateway", "pod gateway 10.245.0.1 is outside pod_cidr 10.244.0.0/16"),
    ]


# --- loader ---------------------------------------------------------------------------------


ANCHORED = """\
cluster: {name: t, bundle: paas-full, root_host: t.example.com}
networks:
  management: {subnet: 10.9.0.0/24, gateway: 10.9.0.1, vip: 10.9.0.10}
  metallb: {range: 10.9.0.100-10.9.0.150}
  netboot: {server: 10.9.0.5}
nodes:
  - name: n11
    rack: r1
    role: controlplane
    bmc: &bmc {protocol: ipmi, address: 10.9.1.11, username: admin, password: "env:P"}
    boot: {mac: "52:54:00:00:00:11"}
    ip: 10.9.0.11
    data_disks: [/dev/sdb]
  - name: n21
    rack: r1
    role: worker
    bmc: {<<: *bmc, address: 10.9.1.21}
    boot: {mac: "52:54:00:00:00:21"}
    ip: 10.9.0.21
    data_disks: [/dev/sdb]
"""


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    nodes = load_inventory(write(tmp_path / "site.yaml", ANCHORED)).site.nodes
    assert nodes[1].bmc is not None and nodes[0].bmc is not None
    assert (nodes[1].bmc.address, nodes[1].bmc.username) == ("10.9.1.21", "admin")  # explicit key wins
    assert nodes[0].bmc.address == "10.9.1.11"
    got = problems(tmp_path, ANCHORED.replace("address: 10.9.1.21}", "address: 10.9.1.21, user: x}"))
    assert [(p.line, p.path) for p in got] == [(17, "nodes[1].bmc.user")]
    got = problems(tmp_path, "x-defaults: &d {name: t}\n" + ANCHORED)
    assert [(p.line, p.path) for p in got] == [(1, "x-defaults")]
    assert "unknown key" in got[0].message


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("a: &x [1, *x]\n", 1, "refers to a value that contains it"),
        ("a: *nope\n", 1, "has no anchor"),
        ("a: 1\n---\nb: 2\n", 2, "only one YAML document"),
        ("? [1, 2]\n: x\n", 1, "mapping keys must be plain scalars"),
        ("a: !!python/object:os.system x\n", 1, "unsupported YAML tag"),
        ("a: !!int nope\n", 1, "cannot read 'nope' as int"),
        ("a: !!set {x}\n", 1, "unsupported YAML tag"),
        ("a: 2020-01-01\nb:\n  2020-01-02: x\n", 3, "mapping keys must be plain scalars"),
    ],
)
def test_yaml_edge_cases(tmp_path: Path, text: str, line: int, phrase: str) -> None:
    got = problems(tmp_path, text)
    assert got[0].line == line
    assert phrase in got[0].message


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    got = problems(tmp_path, "\n".join(lines) + "\n")
    assert "too large once aliases are expanded" in got[0].message


def test_deeply_nested_yaml_is_an_error_not_a_crash(tmp_path: Path) -> None:
    got = problems(tmp_path, "cluster: " + "[" * 5000 + "]" * 5000 + "\n")
    # PyYAML >= 6.0.4 stops such input in its parser (a nesting limit); older versions parse
    # it and the model refuses the list. Either way: one located problem, no RecursionError.
    assert got[0].line == 1
    assert "nesting depth" in got[0].message or (got[0].path == "cluster" and "got a list" in got[0].message)


def test_huge_numbers_and_odd_keys(tmp_path: Path) -> None:
    data = site()
    data["networks"]["management"]["mtu"] = 10**400
    data["nodes"][0]["bmc"]["port"] = -(10**30)
    got = messages(tmp_path, data)
    assert [p for p, _ in got] == ["networks.management.mtu", "nodes[0].bmc.port"]
    text = "cluster: {name: t, bundle: distro-hosted, 1: x, null: y}\nhosted: {kubeconfig: k}\n"
    assert {p.line for p in problems(tmp_path, text)} == {1}


# --- directory inventories -----------------------------------------------------------------


def _split_site(root: Path) -> None:
    write(root / "site.yaml", {k: v for k, v in BASE.items() if k not in ("racks", "nodes")})
    write(
        root / "racks" / "r2.yaml", {"racks": [{"name": "r2"}], "nodes": [BASE["nodes"][1], BASE["nodes"][3]]}
    )
    write(
        root / "racks" / "r1.yaml", {"racks": [{"name": "r1"}], "nodes": [BASE["nodes"][0], BASE["nodes"][2]]}
    )


def test_directory_merge_order(tmp_path: Path) -> None:
    _split_site(tmp_path)
    write(tmp_path / "tenants.yaml", {"tenants": {"root": {"etcd": True, "children": {"a": {}}}}})
    write(tmp_path / "site.lock.yaml", "not: [valid")  # lock files are skipped
    write(tmp_path / "patches" / "p.yaml", "- op: add")  # patches are not inventory
    site_ = load_inventory(tmp_path).site
    # site.yaml, then top-level files by name, then sub-directories: r1 before r2
    assert [r.name for r in site_.racks] == ["r1", "r2"]
    assert [n.name for n in site_.nodes] == ["n11", "n13", "n12", "n21"]
    assert site_.tenants is not None and "a" in site_.tenants.root.children
    assert site_.base_dir == tmp_path


def test_directory_problem_points_at_the_right_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _split_site(tmp_path)
    text = (tmp_path / "racks" / "r2.yaml").read_text().replace("10.9.0.21", "10.9.0.11")
    write(tmp_path / "racks" / "r2.yaml", text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InventoryError) as info:
        load_inventory(Path("."))
    got = info.value.problems
    line = text.splitlines().index("  ip: 10.9.0.11") + 1
    assert [(p.file, p.line, p.path) for p in got] == [("racks/r2.yaml", line, "nodes[3].ip")]


def test_directory_same_value_twice_is_fine_different_is_not(tmp_path: Path) -> None:
    _split_site(tmp_path)
    write(tmp_path / "more.yaml", {"cluster": {"name": "t"}})
    load_inventory(tmp_path)
    write(tmp_path / "more.yaml", {"cluster": {"name": "u"}})
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path)
    (p,) = info.value.problems
    assert (p.path, p.line) == ("cluster.name", 2)
    assert p.file.endswith("more.yaml") and "site.yaml:2" in p.message


def test_empty_and_missing_inventories(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory(tmp_path / "nope")
    with pytest.raises(InventoryError, match="no YAML files"):
        load_inventory(tmp_path)
    write(tmp_path / "a.yaml", "# nothing\n")
    with pytest.raises(InventoryError, match="inventory is empty"):
        load_inventory(tmp_path)
    (tmp_path / "b.yaml").write_bytes(b"cluster: \xff\n")
    with pytest.raises(InventoryError, match="not UTF-8"):
        load_inventory(tmp_path)


# --- secret references ----------------------------------------------------------------------


def test_secret_ref_resolves_env_and_file_without_leaking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_BMC_PW", "s3cret-env")
    assert SecretRef("env:T_BMC_PW").resolve() == "s3cret-env"
    (tmp_path / "pw").write_text("s3cret-file\n")
    assert SecretRef("file:pw").resolve(tmp_path) == "s3cret-file"
    monkeypatch.delenv("T_BMC_PW")
    with pytest.raises(InputError, match="T_BMC_PW is not set"):
        SecretRef("env:T_BMC_PW").resolve()
    with pytest.raises(InputError, match="cannot read") as info:
        SecretRef("file:missing").resolve(tmp_path)
    assert "s3cret" not in str(info.value)
