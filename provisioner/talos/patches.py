"""Config patches the way ``talosctl --config-patch`` understands them.

Two kinds, told apart by shape: a YAML list of ``{op, path, ...}`` objects is an RFC 6902
JSON patch applied to the v1alpha1 document (as talosctl does); anything else is a
strategic merge, one YAML document per config document.

Strategic merge here: mappings merge key by key; ``$patch: delete`` removes a key (or a
whole document); the subnet lists Talos marks ``merge:"replace"`` are replaced; other lists
are appended to, skipping items already present (so a patch applied twice is harmless);
``machine.network.interfaces`` entries merge with the entry of the same ``interface`` name
or ``deviceSelector``. Documents other than v1alpha1 merge with the one of the same
``kind`` (and ``name``, when they have one) or are appended.

Nothing is modified in place: a merge copies only the containers on the patched paths and
shares every untouched subtree, which is what keeps 1,000 nodes cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

Document = dict[str, Any]

REPLACE_LISTS: frozenset[tuple[str, ...]] = frozenset({
    ("cluster", "network", "podSubnets"),
    ("cluster", "network", "serviceSubnets"),
    ("machine", "kubelet", "nodeIP", "validSubnets"),
    ("cluster", "etcd", "advertisedSubnets"),
    ("cluster", "etcd", "listenSubnets"),
})
_INTERFACES = ("machine", "network", "interfaces")


@dataclass(frozen=True)
class Patch:
    """One parsed patch file. ``where`` names it for errors (inventory field and path)."""

    where: str
    strategic: tuple[Document, ...] = ()
    json6902: tuple[dict[str, Any], ...] = ()


def parse_patch(text: str, where: str) -> Patch:
    try:
        docs = [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{where}: not valid YAML{line}") from None
    if len(docs) == 1 and isinstance(docs[0], list):
        ops = docs[0]
        for i, op in enumerate(ops):
            if not isinstance(op, dict) or not all(isinstance(op.get(k), str) for k in ("op", "path")):
                raise InputError(f"{where}: JSON patch operation {i} needs string 'op' and 'path'")
            if op["op"] not in ("add", "remove", "replace", "move", "copy", "test"):
                raise InputError(f"{where}: JSON patch operation {i}: unknown op {op['op']!r}")
        return Patch(where, json6902=tuple(ops))
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise InputError(f"{where}: document {i} must be a mapping (a strategic-merge patch) "
                             "or the file a list of JSON patch operations")
    return Patch(where, strategic=tuple(docs))


def load_patch(path: Path, where: str) -> Patch:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{where}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # a binary or Latin-1 file: the operator's to fix (exit 2)
        raise InputError(
            f"{where}: {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    return parse_patch(text, f"{where} ({path})")


class _Delete:
    pass


_DELETE = _Delete()


def _clean(value: Any) -> Any:
    """A patch value inserted where nothing was: drop ``$patch`` directives inside it."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def merge(base: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """``base`` with ``patch`` merged in; neither argument is modified."""
    if isinstance(patch, dict):
        directive = patch.get("$patch")
        if directive == "delete":
            return _DELETE
        if directive == "replace" or not isinstance(base, dict):
            return _clean(patch)
        merged_map = dict(base)
        for key, value in patch.items():
            if key == "$patch":
                continue
            if key in merged_map:
                merged = merge(merged_map[key], value, (*path, key))
            else:
                deleting = isinstance(value, dict) and value.get("$patch") == "delete"
                merged = _DELETE if deleting else _clean(value)
            if merged is _DELETE:
                merged_map.pop(key, None)
            else:
                merged_map[key] = merged
        return merged_map
    if isinstance(patch, list):
        if not isinstance(base, list) or path in REPLACE_LISTS:
            return _clean(patch)
        if path == _INTERFACES:
            return _merge_interfaces(base, patch)
        out = list(base)
        for item in patch:
            item = _clean(item)
            if item not in out:
                out.append(item)
        return out
    return patch


def _interface_key(dev: Any) -> Any:
    if not isinstance(dev, dict):
        return None
    if "interface" in dev:
        return ("interface", dev["interface"])
    if "deviceSelector" in dev:
        selector = dev["deviceSelector"]
        return ("selector", repr(sorted(selector.items())) if isinstance(selector, dict) else repr(selector))
    return None


def _merge_interfaces(base: list[Any], patch: list[Any]) -> list[Any]:
    out = list(base)
    for dev in patch:
        key = _interface_key(dev)
        for i, existing in enumerate(out):
            if key is not None and _interface_key(existing) == key:
                merged = merge(existing, dev, (*_INTERFACES, "*"))
                if merged is _DELETE:
                    del out[i]
                else:
                    out[i] = merged
                break
        else:
            out.append(_clean(dev))
    return out


def _doc_key(doc: Document) -> tuple[Any, Any]:
    return doc.get("kind"), doc.get("name")


def apply_strategic(docs: list[Document], patch_docs: Iterable[Document]) -> list[Document]:
    """Merge each patch document into the matching config document (see module docstring)."""
    out = list(docs)
    for pdoc in patch_docs:
        if "kind" not in pdoc:  # a v1alpha1 patch
            out[0] = merge(out[0], pdoc)
            continue
        key = _doc_key(pdoc)
        for i in range(1, len(out)):
            if _doc_key(out[i]) == key or (key[1] is None and out[i].get("kind") == key[0]):
                merged = merge(out[i], pdoc)
                if merged is _DELETE:
                    del out[i]
                else:
                    out[i] = merged
                break
        else:
            if pdoc.get("$patch") != "delete":
                out.append(_clean(pdoc))
    return out


def apply_patch(docs: list[Document], patch: Patch) -> list[Document]:
    if patch.json6902:
        return [apply_json6902(docs[0], patch.json6902, patch.where), *docs[1:]]
    return apply_strategic(docs, patch.strategic)


# --- RFC 6902 ------------------------------------------------------------------------------------

def _pointer(path: str, where: str, i: int) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise InputError(f"{where}: JSON patch operation {i}: path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], where: str, i: int) -> Any:
    node = doc
    for part in parts:
        node = _child(node, part, where, i, "/".join(parts))
    return node


def _child(node: Any, part: str, where: str, i: int, path: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise InputError(f"{where}: JSON patch operation {i}: /{path} does not exist")
        return node[part]
    if isinstance(node, list):
        idx = _index(node, part, where, i, path, allow_end=False)
        return node[idx]
    raise InputError(f"{where}: JSON patch operation {i}: /{path} does not exist")


def _index(node: list[Any], part: str, where: str, i: int, path: str, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(node)
    if not part.isdigit() or (len(part) > 1 and part.startswith("0")):
        raise InputError(f"{where}: JSON patch operation {i}: /{path}: {part!r} is not a list index")
    idx = int(part)
    if idx > len(node) or (idx == len(node) and not allow_end):
        raise InputError(f"{where}: JSON patch operation {i}: /{path}: index {idx} is out of range")
    return idx


def _add(doc: Any, parts: list[str], value: Any, where: str, i: int) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], where, i)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, where, i, "/".join(parts), allow_end=True), value)
    else:
        where_at = f"{where}: JSON patch operation {i}"
        raise InputError(f"{where_at}: parent of /{'/'.join(parts)} is not a container")
    return doc


def _remove(doc: Any, parts: list[str], where: str, i: int) -> Any:
    if not parts:
        raise InputError(f"{where}: JSON patch operation {i}: cannot remove the whole document")
    parent = _walk(doc, parts[:-1], where, i)
    value = _child(parent, parts[-1], where, i, "/".join(parts))
    if isinstance(parent, dict):
        del parent[parts[-1]]
    else:
        del parent[int(parts[-1])]
    return value


def apply_json6902(doc: Document, ops: Iterable[dict[str, Any]], where: str) -> Document:
    """Apply RFC 6902 operations to a deep copy of ``doc``. Errors name the operation and
    path, never the values (a patch may well carry secrets)."""
    out: Any = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        kind = op["op"]
        parts = _pointer(op["path"], where, i)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise InputError(f"{where}: JSON patch operation {i} ({kind}) needs a 'value'")
        if kind == "add":
            out = _add(out, parts, copy.deepcopy(op["value"]), where, i)
        elif kind == "remove":
            _remove(out, parts, where, i)
        elif kind == "replace":
            _walk(out, parts, where, i)  # must exist
            if parts:
                _remove(out, parts, where, i)
            out = _add(out, parts, copy.deepcopy(op["value"]), where, i)
        elif kind in ("move", "copy"):
            if not isinstance(op.get("from"), str):
                raise InputError(f"{where}: JSON patch operation {i} ({kind}) needs a string 'from'")
            src = _pointer(op["from"], where, i)
            if kind == "move":
                if parts[: len(src)] == src and parts != src:
                    raise InputError(f"{where}: JSON patch operation {i}: cannot move a value into itself")
                value = _remove(out, src, where, i)
            else:
                value = copy.deepcopy(_walk(out, src, where, i))
            out = _add(out, parts, value, where, i)
        elif kind == "test" and _walk(out, parts, where, i) != op["value"]:
            raise InputError(f"{where}: JSON patch operation {i}: test of {op['path']} failed")
    if not isinstance(out, dict):
        raise InputError(f"{where}: the patched v1alpha1 document is no longer a mapping")
    return out
