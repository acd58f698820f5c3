"""The tenant tree: namespaces, hosts, nearest serving tenant, access, labels, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.cli import main
from provisioner.inventory.model import Tenant
from provisioner.tenants import ROOT_NAMESPACE, TenantNode, build_tree, can_manage, find

# root (etcd, ingress, monitoring)
# ├── a (monitoring)                       host a.example.org
# │   ├── b                                host b.a.example.org
# │   │   └── c (etcd)                     host own: c.internal.example.net
# │   │       └── d (ingress, seaweedfs)   host d.c.internal.example.net
# │   │           └── e                    host e.d.c.internal.example.net
# │   └── x (etcd)
# └── s (ingress)
SPEC = Tenant(
    etcd=True,
    ingress=True,
    monitoring=True,
    children={
        "a": Tenant(
            monitoring=True,
            children={
                "b": Tenant(
                    children={
                        "c": Tenant(
                            etcd=True,
                            host="c.internal.example.net",
                            children={"d": Tenant(ingress=True, seaweedfs=True, children={"e": Tenant()})},
                        )
                    }
                ),
                "x": Tenant(etcd=True),
            },
        ),
        "s": Tenant(ingress=True),
    },
)


@pytest.fixture
def root() -> TenantNode:
    return build_tree(SPEC, "example.org")


def by_path(root: TenantNode, *names: str) -> TenantNode:
    node = root
    for name in names:
        node = next(c for c in node.children if c.name == name)
    return node


def test_namespaces_follow_cozystack_naming(root: TenantNode) -> None:
    got = {n.path: n.namespace for n in root.walk()}
    assert got == {
        ("root",): "tenant-root",
        ("root", "a"): "tenant-a",
        ("root", "a", "b"): "tenant-a-b",
        ("root", "a", "b", "c"): "tenant-a-b-c",
        ("root", "a", "b", "c", "d"): "tenant-a-b-c-d",
        ("root", "a", "b", "c", "d", "e"): "tenant-a-b-c-d-e",
        ("root", "a", "x"): "tenant-a-x",
        ("root", "s"): "tenant-s",
    }
    assert by_path(root, "a", "b", "c", "d", "e").depth == 5


def test_hosts_are_own_or_inherited(root: TenantNode) -> None:
    assert root.host == "example.org"
    assert by_path(root, "a").host == "a.example.org"
    assert by_path(root, "a", "b").host == "b.a.example.org"
    assert by_path(root, "a", "b", "c").host == "c.internal.example.net"  # its own
    assert by_path(root, "a", "b", "c", "d").host == "d.c.internal.example.net"  # inherits from an own host
    assert by_path(root, "a", "b", "c", "d", "e").host == "e.d.c.internal.example.net"


def test_root_host_from_the_tenant_overrides_the_cluster(root: TenantNode) -> None:
    tree = build_tree(Tenant(host="other.example.com", children={"k": Tenant()}), "example.org")
    assert tree.host == "other.example.com"
    assert tree.children[0].host == "k.other.example.com"
    assert build_tree(Tenant(children={"k": Tenant()}), None).children[0].host is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), {"etcd": "tenant-root", "ingress": "tenant-root", "monitoring": "tenant-root"}),
        (("a",), {"etcd": "tenant-root", "ingress": "tenant-root", "monitoring": "tenant-a"}),
        (("a", "b"), {"etcd": "tenant-root", "ingress": "tenant-root", "monitoring": "tenant-a"}),
        (("a", "b", "c"), {"etcd": "tenant-a-b-c", "ingress": "tenant-root", "monitoring": "tenant-a"}),
        (
            ("a", "b", "c", "d"),
            {
                "etcd": "tenant-a-b-c",
                "ingress": "tenant-a-b-c-d",
                "monitoring": "tenant-a",
                "seaweedfs": "tenant-a-b-c-d",
            },
        ),
        (
            ("a", "b", "c", "d", "e"),
            {
                "etcd": "tenant-a-b-c",
                "ingress": "tenant-a-b-c-d",
                "monitoring": "tenant-a",
                "seaweedfs": "tenant-a-b-c-d",
            },
        ),
        (("a", "x"), {"etcd": "tenant-a-x", "ingress": "tenant-root", "monitoring": "tenant-a"}),
        (("s",), {"etcd": "tenant-root", "ingress": "tenant-s", "monitoring": "tenant-root"}),
    ],
)
def test_services_resolve_to_nearest_enabling_ancestor(
    root: TenantNode, path: tuple[str, ...], expected: dict[str, str]
) -> None:
    assert by_path(root, *path).services == expected


def test_service_nobody_runs_is_unresolved() -> None:
    tree = build_tree(Tenant(children={"a": Tenant(children={"b": Tenant(children={"c": Tenant()})})}), None)
    assert all(n.services == {} for n in tree.walk())
    assert tree.children[0].namespace_labels() == {}


def test_can_manage_self_and_descendants_only(root: TenantNode) -> None:
    a, b = by_path(root, "a"), by_path(root, "a", "b")
    c, e = by_path(root, "a", "b", "c"), by_path(root, "a", "b", "c", "d", "e")
    x, s = by_path(root, "a", "x"), by_path(root, "s")
    every = list(root.walk())
    assert all(can_manage(root, t) for t in every)  # root manages everything
    assert all(can_manage(t, t) for t in every)  # everyone manages itself
    assert can_manage(a, e) and can_manage(b, e) and can_manage(c, e) and can_manage(a, x)
    # ancestors: never
    assert not can_manage(e, c) and not can_manage(e, a) and not can_manage(a, root) and not can_manage(c, b)
    # siblings and cousins: never
    assert not can_manage(b, x) and not can_manage(x, b) and not can_manage(a, s) and not can_manage(s, a)
    assert not can_manage(x, e) and not can_manage(s, e)
    # the rule, over every pair
    for actor in every:
        for target in every:
            expected = actor is target or actor in target.ancestors()
            assert can_manage(actor, target) is expected, (actor.namespace, target.namespace)


def test_namespace_labels(root: TenantNode) -> None:
    assert by_path(root, "a", "b", "c", "d").namespace_labels() == {
        "namespace.cozystack.io/etcd": "tenant-a-b-c",
        "namespace.cozystack.io/ingress": "tenant-a-b-c-d",
        "namespace.cozystack.io/monitoring": "tenant-a",
        "namespace.cozystack.io/seaweedfs": "tenant-a-b-c-d",
        "namespace.cozystack.io/host": "d.c.internal.example.net",
    }
    assert root.namespace_labels()["namespace.cozystack.io/host"] == "example.org"


def test_find_and_walk_order(root: TenantNode) -> None:
    assert find(root, "tenant-a-b-c").name == "c"
    assert find(root, ROOT_NAMESPACE) is root
    with pytest.raises(KeyError):
        find(root, "tenant-nope")
    order = [n.namespace for n in root.walk()]
    assert order.index("tenant-a") < order.index("tenant-a-b") < order.index("tenant-a-b-c-d-e")
    assert [n.namespace for n in by_path(root, "a", "b").descendants()] == [
        "tenant-a-b-c",
        "tenant-a-b-c-d",
        "tenant-a-b-c-d-e",
    ]


def test_deep_tree_does_not_recurse() -> None:
    spec = Tenant()
    for i in range(2000):  # far deeper than Python's recursion limit
        spec = Tenant(children={f"t{i}": spec})
    root = build_tree(spec, "example.org")
    assert sum(1 for _ in root.walk()) == 2001


def _site(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        """
cluster: {name: t, bundle: paas-hosted, root_host: example.org, api_server_endpoint: "https://api.example.org:6443"}
hosted: {kubeconfig: kubeconfig}
tenants:
  root:
    etcd: true
    ingress: true
    monitoring: true
    children:
      a:
        monitoring: true
        children:
          b:
            children:
              c:
                etcd: true
                children:
                  d: {ingress: true}
      s: {host: s.example.net}
"""
    )
    return path


def test_tenants_show_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--inventory", str(_site(tmp_path)), "tenants", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("root  ns=tenant-root  host=example.org")
    d_line = next(line for line in lines if "ns=tenant-a-b-c-d " in line)
    assert "host=d.c.b.a.example.org" in d_line
    assert "etcd=tenant-a-b-c, ingress=tenant-a-b-c-d, monitoring=tenant-a" in d_line
    assert d_line.index("d  ns=") > lines[1].index("a  ns=")  # indented below its ancestors
    assert any("ns=tenant-s  host=s.example.net" in line for line in lines)
    assert len(lines) == 6


def test_tenants_show_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--inventory", str(_site(tmp_path)), "--output", "json", "tenants", "show"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["namespace"] == "tenant-root"
    assert data["enabled"] == ["etcd", "ingress", "monitoring"]
    a = data["children"][0]
    d = a["children"][0]["children"][0]["children"][0]
    assert (d["name"], d["namespace"], d["host"]) == ("d", "tenant-a-b-c-d", "d.c.b.a.example.org")
    assert d["services"] == {"etcd": "tenant-a-b-c", "ingress": "tenant-a-b-c-d", "monitoring": "tenant-a"}
    assert d["enabled"] == ["ingress"]
    assert [c["name"] for c in data["children"]] == ["a", "s"]


def test_root_services_default_on_and_can_be_turned_off(tmp_path: Path) -> None:
    from provisioner.inventory import load_inventory
    from provisioner.tenants import tree_for

    text = _site(tmp_path).read_text()
    path = tmp_path / "defaults.yaml"
    path.write_text(
        text.replace(
            "    etcd: true\n    ingress: true\n    monitoring: true\n", "    monitoring: false\n", 1
        )
    )
    root = tree_for(load_inventory(path).site)
    assert root.services == {"etcd": "tenant-root", "ingress": "tenant-root"}
    assert by_path(root, "s").services == {"etcd": "tenant-root", "ingress": "tenant-root"}
    assert by_path(root, "a", "b").services["monitoring"] == "tenant-a"
