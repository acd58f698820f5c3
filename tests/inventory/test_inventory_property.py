"""Property: whatever an operator does to a valid inventory, the loader either accepts it
or raises the project's own ``InventoryError`` naming a file and a field or message.

Mutations work on the parsed data (delete keys, change types, insert junk keys, swap
values, duplicate list items, random scalars at random paths) and on the raw text
(delete, insert, duplicate or re-indent lines). A mutated inventory that still loads must
also survive everything downstream that reads a site: the plan and the tenant tree.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.inventory import InventoryError, load_inventory
from provisioner.plan import build_plan
from provisioner.tenants import tree_for

EXAMPLES = Path(__file__).resolve().parents[2] / "inventory" / "examples"


def _read_dir(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.yaml"))}


# Each base is {relative file name: YAML text}; a single-file inventory has one entry.
BASES: list[dict[str, str]] = [
    {"lab.yaml": (EXAMPLES / "lab.yaml").read_text()},
    _read_dir(EXAMPLES / "dc1"),
    {
        "hosted.yaml": yaml.safe_dump(
            {
                "cluster": {
                    "name": "hosted",
                    "bundle": "paas-hosted",
                    "root_host": "h.example.com",
                    "api_server_endpoint": "https://api.h.example.com:6443",
                },
                "hosted": {"kubeconfig": "kubeconfig"},
                "tenants": {
                    "root": {"etcd": True, "children": {"a": {"children": {"b": {"ingress": True}}}}}
                },
            }
        )
    },
]

# no lone surrogates: they cannot be written to a UTF-8 file, so no operator can produce them
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.sampled_from(
        ["", "-", "10.0.0.1", "10.0.0.0/8", "env:X", "file:", "paas-full", "v1.11.6", "::1", "a-b"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts | st.integers(), inner, max_size=3),
    max_leaves=6,
)
junk_keys = st.one_of(texts, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _delete(root: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return None
    parent = _get(root, path[:-1])
    del parent[path[-1]]
    return root


def _unshared(node: Any) -> Any:
    """A tree of fresh dicts and lists. YAML aliases (the lab's ``*etcd-on-tcg``) and a duplicate
    (``[target, target]``, dumped as an alias) load as one object under several paths: mutating
    it through one path moved the others under the mutator (a swap into itself: a cycle, or a
    drawn path gone). The loader under test still reads the aliases of the texts."""
    if isinstance(node, dict):
        return {k: _unshared(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshared(v) for v in node]
    return node


def _mutate_data(data: Any, draw: Any) -> Any:
    data = _unshared(data)
    paths = _paths(data)
    path = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["delete", "replace", "junk_key", "swap", "duplicate", "wrap", "stringify"]))
    target = _get(data, path)
    if op == "delete":
        return _delete(data, path)
    if op == "replace":
        return _set(data, path, draw(values))
    if op == "junk_key":
        if isinstance(target, dict):
            target[draw(junk_keys)] = draw(values)
            return data
        return _set(data, path, {draw(junk_keys): target})
    if op == "swap":
        other = draw(st.sampled_from(paths))
        a, b = _get(data, path), _get(data, other)
        if path[: len(other)] == other or other[: len(path)] == path:
            return data  # one contains the other: swapping would build a cycle
        _set(data, path, b)
        return _set(data, other, a)
    if op == "duplicate":
        if isinstance(target, list) and target:
            target.append(json.loads(json.dumps(target[draw(st.integers(0, len(target) - 1))], default=str)))
            return data
        return _set(data, path, [target, target])
    if op == "wrap":
        return _set(data, path, [target])
    return _set(data, path, str(target))


def _mutate_text(text: str, draw: Any) -> str:
    lines = text.splitlines()
    if not lines:
        return draw(st.text(max_size=40))
    i = draw(st.integers(0, len(lines) - 1))
    op = draw(
        st.sampled_from(["delete_line", "insert_text", "duplicate_line", "indent", "dedent", "truncate"])
    )
    if op == "delete_line":
        del lines[i]
    elif op == "insert_text":
        line = lines[i]
        at = draw(st.integers(0, len(line)))
        lines[i] = (
            line[:at]
            + draw(st.text(alphabet=st.sampled_from(list(":-{}[]&*!|>'\"#,? \t\x00é")), max_size=6))
            + line[at:]
        )
    elif op == "duplicate_line":
        lines.insert(i, lines[i])
    elif op == "indent":
        lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
    elif op == "dedent":
        lines[i] = lines[i].lstrip()
    else:
        return text[: draw(st.integers(0, len(text)))]
    return "\n".join(lines) + "\n"


def _load_and_use(root: Path) -> None:
    """Load; on success use the site the way later stages do."""
    inv = load_inventory(root)
    site = inv.site
    json.dumps(build_plan(site, site.select()), default=str)
    json.dumps(tree_for(site).as_dict())
    assert all(w.file and w.path for w in inv.warnings)


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.data())
def test_mutated_inventories_fail_only_with_inventory_error(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(BASES), label="base")
    files = dict(base)
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if data.draw(st.booleans(), label="text mutation"):
            files[name] = _mutate_text(files[name], data.draw)
        else:
            try:
                parsed = yaml.safe_load(files[name])
            except yaml.YAMLError:
                continue  # an earlier text mutation broke it; the text itself is the test case
            files[name] = yaml.safe_dump(_mutate_data(parsed, data.draw), allow_unicode=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "inventory"
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        target = root if len(files) > 1 else root / name
        try:
            _load_and_use(target)
        except InventoryError as exc:
            assert exc.problems, "an InventoryError must carry at least one problem"
            for problem in exc.problems:
                assert problem.file, problem
                assert problem.path or problem.message, problem
            assert str(exc)


def test_bases_are_valid() -> None:
    """The property only means something if the unmutated bases load."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, base in enumerate(BASES):
            root = Path(tmp) / str(i)
            for rel, text in base.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(text)
            _load_and_use(root if len(base) > 1 else root / next(iter(base)))
