"""The simulator's tenant rules against the product's (``provisioner/tenants.py``): two implementations
written separately from the same upstream facts must agree, on generated trees.

Known, deliberate difference: upstream fixes every tenant-root label to ``tenant-root`` (platform chart
templates/apps.yaml), so the simulator resolves a service nobody enables to tenant-root, where the
product leaves the label out. The comparison treats the product's "absent" as tenant-root.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.inventory.model import Tenant
from provisioner.lab.kube.cozysim import tenancy
from provisioner.tenants import SERVICES, build_tree

NAMES = st.sampled_from(["foo", "bar", "baz", "qux", "dev", "prod", "a1", "b2"])
FLAGS = st.fixed_dictionaries({svc: st.booleans() for svc in SERVICES})
HOSTS = st.one_of(st.none(), st.sampled_from(["custom.net", "corp.example.com"]))


def _tenants(depth: int) -> st.SearchStrategy[Tenant]:
    children = st.just({}) if depth == 0 else st.dictionaries(NAMES, _tenants(depth - 1), max_size=3)
    return st.builds(
        lambda flags, host, kids: Tenant(host=host, children=kids, **flags), FLAGS, HOSTS, children
    )


def _flatten(node: Tenant, namespace: str, out: list[tenancy.TreeNode]) -> None:
    for name, child in node.children.items():
        spec = {svc: getattr(child, svc) for svc in SERVICES}
        if child.host:
            spec["host"] = child.host
        out.append(tenancy.TreeNode(name, namespace, spec))
        _flatten(child, f"tenant-{name}" if namespace == "tenant-root" else f"{namespace}-{name}", out)


@settings(max_examples=60, deadline=None)
@given(children=st.dictionaries(NAMES, _tenants(3), max_size=3))
def test_simulator_and_product_resolve_the_same_tree(children: dict[str, Tenant]) -> None:
    root = Tenant(etcd=True, ingress=True, monitoring=True, children=children)  # as the install leaves it
    product = {node.namespace: node for node in build_tree(root, "example.org").walk()}
    nodes: list[tenancy.TreeNode] = []
    _flatten(root, "tenant-root", nodes)
    simulator = tenancy.resolve_tree("example.org", nodes)
    assert set(simulator) == set(product)
    for namespace, theirs in product.items():
        mine = simulator[namespace]
        assert mine.host == theirs.host, namespace
        for svc in SERVICES:
            assert mine.serving(svc) == theirs.services.get(svc, "tenant-root"), (namespace, svc)
