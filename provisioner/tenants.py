"""The tenant tree, kept importable here: it lives in ``provisioner.inventory.tenants``."""

from .inventory.tenants import (
    ROOT_NAMESPACE,
    SERVICES,
    TenantNode,
    build_tree,
    can_manage,
    child_namespace,
    find,
    tree_for,
    tree_problems,
)

__all__ = [
    "ROOT_NAMESPACE",
    "SERVICES",
    "TenantNode",
    "build_tree",
    "can_manage",
    "child_namespace",
    "find",
    "tree_for",
    "tree_problems",
]
