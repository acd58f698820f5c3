"""No import cycles, not even lazy ones, and the directions the structure relies on.

The graph is read from the source (function-level imports included, ``TYPE_CHECKING`` ones
left out, since they never run). A second test imports every module on its own, in a fresh
interpreter state, so a module that only works after some other import is found too.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from . import importgraph

GRAPH = importgraph.graph()


def _imports(prefix: str, target: str) -> list[tuple[str, str]]:
    return sorted(
        (mod, dep)
        for mod, deps in GRAPH.items()
        if mod == prefix or mod.startswith(prefix + ".")
        for dep in deps
        if dep == target or dep.startswith(target + ".")
    )


def test_the_graph_sees_lazy_imports() -> None:
    # pipeline.up imports the (shared) netboot service inside a function: it must still be an edge.
    assert "provisioner.netboot.shared" in GRAPH["provisioner.pipeline.up"]
    # ...and an import under TYPE_CHECKING is not one (nodeflow only names RunContext in types).
    assert "provisioner.pipeline.context" not in GRAPH["provisioner.workflow.nodeflow"]


def test_no_import_cycles_anywhere() -> None:
    assert importgraph.cycles(GRAPH) == []


def test_talos_to_talosapi_runs_one_way() -> None:
    assert _imports("provisioner.talosapi", "provisioner.talos") == []
    assert ("provisioner.talos.talosconfig", "provisioner.talosapi.talosconfig") in _imports(
        "provisioner.talos", "provisioner.talosapi"
    )


def test_tenants_depend_on_the_inventory_one_way() -> None:
    tenants = {"provisioner.tenants", "provisioner.inventory.tenants"}
    assert all(dep == "provisioner.inventory.model" for dep in GRAPH["provisioner.inventory.tenants"])
    assert "provisioner.inventory.tenants" in GRAPH["provisioner.inventory"]
    for component in importgraph.cycles(GRAPH):
        assert not tenants & set(component)


def test_layers_below_do_not_import_layers_above() -> None:
    # BMC drivers own their settings; the inventory builds on them, never the reverse.
    assert _imports("provisioner.bmc", "provisioner.inventory") == []
    # The work of the stages (workflow) never imports the pipeline that assembles them.
    assert _imports("provisioner.workflow", "provisioner.pipeline") == []
    # The seam (base, context) imports no stage.
    for seam in ("provisioner.pipeline.base", "provisioner.pipeline.context"):
        above = ("provisioner.pipeline.", "provisioner.cozystack")
        assert not {d for d in GRAPH[seam] if d.startswith(above)}
    # Nothing below the CLI imports it (provisioner.lab.fleet.upmain is a process entry point).
    below_cli = [
        (m, d) for m, d in _imports("provisioner", "provisioner.cli") if not m.startswith("provisioner.cli")
    ]
    assert [m for m, _ in below_cli if m != "provisioner.lab.fleet.upmain"] == []


def _import_alone(name: str) -> str | None:
    """Import ``name`` in a forked child whose parent imported no ``provisioner`` module."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        code = 0
        try:
            importlib.import_module(name)
        except BaseException as exc:  # report anything, even SystemExit
            os.write(write, f"{type(exc).__name__}: {exc}".encode()[:2000])
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        message = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    return None if os.waitstatus_to_exitcode(status) == 0 else message or "failed"


def test_every_module_imports_on_its_own() -> None:
    # Third-party libraries stay loaded (that is what makes a fork per module cheap); every
    # ``provisioner`` module is forgotten, so each child imports ours from nothing.
    for name in GRAPH:
        importlib.import_module(name)
    loaded = [m for m in sys.modules if m == "provisioner" or m.startswith("provisioner.")]
    saved = {m: sys.modules.pop(m) for m in loaded}
    # A module its own package imports at the top is imported, alone, exactly as that package
    # is (the package comes first either way): importing the package covers it.
    top = importgraph.graph(top_level=True)
    alone = [m for m in sorted(GRAPH) if "." not in m or m not in top.get(m.rsplit(".", 1)[0], set())]
    try:
        failures = {name: err for name in alone if (err := _import_alone(name)) is not None}
    finally:
        sys.modules.update(saved)
    assert failures == {}


@pytest.mark.parametrize("module", ["provisioner.tenants", "provisioner.inventory.tenants"])
def test_tenant_tree_is_the_same_object_either_way(module: str) -> None:
    mod = importlib.import_module(module)
    from provisioner.inventory.tenants import tree_for

    assert mod.tree_for is tree_for
