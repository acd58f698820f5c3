"""The simulator's own tenant inheritance rules, on the seed example and deeper trees."""

from __future__ import annotations

import pytest

from provisioner.lab.kube.cozysim import tenancy
from provisioner.lab.kube.cozysim.tenancy import TreeNode

ROOT_HOST = "example.org"


def _seed() -> dict[str, tenancy.TenantNamespace]:
    return tenancy.resolve_tree(
        ROOT_HOST,
        [
            TreeNode("bar", "tenant-foo", {"etcd": True}),  # child listed first: order must not matter
            TreeNode("root", "tenant-root", {"etcd": True, "ingress": True, "monitoring": True}),
            TreeNode("foo", "tenant-root", {"monitoring": True}),
        ],
    )


def test_seed_example_from_the_core_concepts_page() -> None:
    tree = _seed()
    bar = tree["tenant-foo-bar"]
    assert bar.serving("etcd") == "tenant-foo-bar"
    assert bar.serving("monitoring") == "tenant-foo"
    assert bar.serving("ingress") == "tenant-root"
    assert tree["tenant-foo"].host == "foo.example.org"
    assert bar.host == "bar.foo.example.org"


def test_seed_namespace_labels() -> None:
    labels = _seed()["tenant-foo-bar"].labels()
    assert labels == {
        "namespace.cozystack.io/etcd": "tenant-foo-bar",
        "namespace.cozystack.io/ingress": "tenant-root",
        "namespace.cozystack.io/monitoring": "tenant-foo",
        "namespace.cozystack.io/seaweedfs": "tenant-root",
        "namespace.cozystack.io/host": "bar.foo.example.org",
        "tenant.cozystack.io/tenant-root": "",
        "tenant.cozystack.io/tenant-foo": "",
        "tenant.cozystack.io/tenant-foo-bar": "",
    }


def test_root_labels_are_fixed_to_tenant_root() -> None:
    root = tenancy.root("example.org")
    assert root.labels()["namespace.cozystack.io/seaweedfs"] == "tenant-root"
    assert root.labels()["namespace.cozystack.io/host"] == "example.org"


def test_labels_round_trip_so_children_resolve_from_the_parent_namespace() -> None:
    bar = _seed()["tenant-foo-bar"]
    again = tenancy.TenantNamespace.from_labels(bar.name, bar.labels())
    assert again == bar
    baz = tenancy.child(again, "baz", {"ingress": True})
    assert baz.name == "tenant-foo-bar-baz"
    assert baz.lineage == ("tenant-root", "tenant-foo", "tenant-foo-bar", "tenant-foo-bar-baz")
    assert baz.serving("etcd") == "tenant-foo-bar"
    assert baz.serving("ingress") == "tenant-foo-bar-baz"


def test_deep_tree_inherits_from_the_nearest_ancestor() -> None:
    nodes = [TreeNode("a", "tenant-root", {"seaweedfs": True, "host": "a.custom.net"})]
    parent = "tenant-a"
    for depth in range(1, 8):
        spec = {"etcd": True} if depth == 4 else {}
        nodes.append(TreeNode(f"l{depth}", parent, spec))
        parent = f"{parent}-l{depth}"
    tree = tenancy.resolve_tree(ROOT_HOST, nodes)
    deepest = tree[parent]
    assert deepest.serving("seaweedfs") == "tenant-a"
    assert deepest.serving("etcd") == "tenant-a-l1-l2-l3-l4"
    assert deepest.serving("ingress") == "tenant-root"
    assert deepest.host == "l7.l6.l5.l4.l3.l2.l1.a.custom.net"
    assert len(deepest.lineage) == 9


def test_root_tenant_host_overrides_the_root_host() -> None:
    tree = tenancy.resolve_tree(
        ROOT_HOST, [TreeNode("root", "tenant-root", {"host": "corp.io"}), TreeNode("foo", "tenant-root", {})]
    )
    assert tree["tenant-foo"].host == "foo.corp.io"


def test_orphans_are_not_resolved() -> None:
    tree = tenancy.resolve_tree(ROOT_HOST, [TreeNode("x", "tenant-nowhere", {})])
    assert set(tree) == {"tenant-root"}


@pytest.mark.parametrize("name", ["foo-bar", "Foo", "", "a_b"])
def test_names_the_chart_refuses(name: str) -> None:
    with pytest.raises(tenancy.TenantError, match="tenant name"):
        tenancy.child(tenancy.root(ROOT_HOST), name, {})


def test_service_releases_follow_the_spec() -> None:
    assert tenancy.service_releases({"etcd": True, "monitoring": True, "ingress": False}) == (
        "etcd",
        "monitoring",
        "info",
    )
