"""The three PATCH flavours other than server-side apply.

- JSON merge patch (RFC 7386): objects merge, ``null`` deletes, everything else replaces.
- JSON patch (RFC 6902): add, remove, replace, move, copy, test; a failed ``test`` or a missing path
  is an error (the API answers 422).
- Strategic merge patch, an **approximation** of the real one for the kinds the platform uses: like a
  merge patch, except that lists of objects under ``containers``, ``initContainers``, ``ports``,
  ``env``, ``volumes``, ``volumeMounts`` and ``imagePullSecrets`` (keyed by ``name``) and under
  ``conditions`` (keyed by ``type``) merge item by item on that key (an item carrying
  ``$patch: delete`` is removed); every other list is replaced whole. The real server
  reads merge keys from each type's Go struct tags; directives other than ``$patch: delete`` and
  ``$retainKeys`` are not supported.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "ports": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
}


class PatchError(ValueError):
    """A patch that cannot be applied; the message says where."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif k in MERGE_KEYS and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = _merge_list(out[k], v, MERGE_KEYS[k])
        else:
            out[k] = strategic_merge_patch(out.get(k), v)
    return out


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if not all(isinstance(i, dict) and key in i for i in [*current, *patch]):
        return copy.deepcopy([i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "delete")])
    out = [dict(i) for i in current]
    index = {i[key]: n for n, i in enumerate(out)}
    for item in patch:
        if item.get("$patch") == "delete":
            out = [i for i in out if i[key] != item[key]]
            index = {i[key]: n for n, i in enumerate(out)}
        elif item[key] in index:
            out[index[item[key]]] = strategic_merge_patch(out[index[item[key]]], item)
        else:
            index[item[key]] = len(out)
            out.append(strategic_merge_patch({}, item))
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise PatchError(f"JSON patch: path {path!r} does not exist")
    return cur


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"JSON patch: path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"JSON patch: index in {path!r} is out of range")
    else:
        raise PatchError(f"JSON patch: cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("JSON patch: cannot remove the whole document")
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise PatchError(f"JSON patch: path {path!r} does not exist")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"JSON patch operation {n} needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, copy.deepcopy(op.get("value"))) if path else op.get("value")
        elif kind == "move":
            value = _get(doc, op["from"])
            doc = _add(_remove(doc, op["from"]), path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"JSON patch: test at {path!r} failed")
        else:
            raise PatchError(f"JSON patch operation {n}: unknown op {kind!r}")
    return doc
