"""Server-side apply and ``managedFields``: who owns which field.

A field set is a set of leaf paths (tuples of keys). Maps are walked into; **lists are atomic**
(owned whole, as ``x-kubernetes-list-type: atomic``): an approximation of the real structured-merge
diff, which also merges lists with merge keys item by item. ``fieldsV1`` is written in the real
encoding (``{"f:spec": {"f:replicas": {}}}``), leaves only.

- Apply: conflicts are fields in the applied config that another manager owns and whose value
  would change; they answer 409 unless ``force`` (then ownership moves). Fields the manager applied
  before and no longer applies are removed unless another manager owns them.
- Update (create, PUT, PATCH): the fields whose value changed move to the updating manager.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

Path = tuple[str, ...]

IGNORED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
}


class ApplyConflict(Exception):
    """Apply would change fields owned by other managers: ``conflicts`` is [(manager, path)]."""

    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        super().__init__(f"Apply failed with {len(conflicts)} conflict(s)")
        self.conflicts = conflicts


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def leaves(obj: Any, skip_status: bool = True) -> set[Path]:
    out: set[Path] = set()

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, (*path, k))
        else:
            out.add(path)

    for k, v in (obj or {}).items():
        if k in ("apiVersion", "kind") or (k == "status" and skip_status):
            continue
        if k == "metadata" and isinstance(v, dict):
            for mk, mv in v.items():
                if mk not in IGNORED_META:
                    walk(mv, ("metadata", mk))
        else:
            walk(v, (k,))
    return out


_MISSING = object()


def value_at(obj: Any, path: Path) -> Any:
    cur = obj
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return _MISSING
        cur = cur[p]
    return cur


def _delete(obj: dict[str, Any], path: Path) -> None:
    cur: Any = obj
    for p in path[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return
        cur = cur[p]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)


def deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base.get(k), v)
        return out
    return copy.deepcopy(over)


def encode(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        cur = root
        for p in path:
            cur = cur.setdefault(f"f:{p}", {})
    return root


def decode(fields: dict[str, Any]) -> set[Path]:
    out: set[Path] = set()

    def walk(node: dict[str, Any], path: Path) -> None:
        children = [k for k in node if k.startswith("f:")]
        if not children and path:
            out.add(path)
        for k in children:
            walk(node[k] or {}, (*path, k[2:]))

    walk(fields or {}, ())
    return out


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], sub: str) -> dict[str, Any]:
    e = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(paths),
    }
    if sub:
        e["subresource"] = sub
    return e


def _overlaps(a: Path, b: Path) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def apply(
    current: dict[str, Any] | None,
    applied: dict[str, Any],
    manager: str,
    force: bool,
    api_version: str,
    skip_status: bool = True,
    sub: str = "",
) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` (managedFields updated); raises ApplyConflict.
    An apply to a subresource (``sub``) is its own entry, as upstream: it never drops what the same
    manager applied to the main resource."""
    new_fields = leaves(applied, skip_status)
    base = current or {}  # the caller's own copy: changed in place
    entries = _entries(base)
    mine_before: set[Path] = set()
    others: list[tuple[dict[str, Any], set[Path]]] = []
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Apply" and e.get("subresource", "") == sub:
            mine_before = decode(e.get("fieldsV1") or {})
        else:
            others.append((e, decode(e.get("fieldsV1") or {})))
    conflicts: list[tuple[str, Path]] = []
    for e, owned in others:
        for p in new_fields:
            for q in owned:
                if _overlaps(p, q) and value_at(base, q) != value_at(applied, q):
                    conflicts.append((e.get("manager", ""), q))
    if conflicts and not force:
        raise ApplyConflict(sorted(set(conflicts)))
    lost = {q for _, q in conflicts}
    kept_others = []
    for e, owned in others:
        rest = {q for q in owned if q not in lost}
        if rest:
            kept_others.append((e, rest))
    owned_by_others = set().union(*(s for _, s in kept_others)) if kept_others else set()
    for p in mine_before - new_fields:
        if p not in owned_by_others and not any(_overlaps(p, q) for q in new_fields):
            _delete(base, p)
    body = {k: v for k, v in applied.items() if not (k == "status" and skip_status)}
    meta = dict(body.get("metadata") or {})
    for k in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"):
        meta.pop(k, None)
    body["metadata"] = meta
    result = deep_merge(base, body)
    new_entries = [
        {**e, "fieldsV1": encode(s)} if s != decode(e.get("fieldsV1") or {}) else e for e, s in kept_others
    ]
    new_entries.append(_entry(manager, "Apply", api_version, new_fields, sub))
    result.setdefault("metadata", {})["managedFields"] = new_entries
    return result


def record_update(
    old: dict[str, Any] | None, new: dict[str, Any], manager: str, api_version: str, sub: str = ""
) -> None:
    """Give ``manager`` (operation Update) the fields that changed from ``old`` to ``new``, in place."""
    skip_status = sub != "status"
    new_fields = leaves(new, skip_status=False)
    changed = {p for p in new_fields if value_at(old, p) != value_at(new, p)} if old else set(new_fields)
    if skip_status:
        changed = {p for p in changed if p[0] != "status"}
    else:
        changed = {p for p in changed if p[0] == "status"}
    entries = _entries(old or {}) if "managedFields" not in (new.get("metadata") or {}) else _entries(new)
    out: list[dict[str, Any]] = []
    mine: set[Path] = set()
    for e in entries:
        owned = {p for p in decode(e.get("fieldsV1") or {}) if value_at(new, p) is not _MISSING}
        if e.get("manager") == manager and e.get("operation") == "Update" and e.get("subresource", "") == sub:
            mine = owned
            continue
        owned -= changed
        if owned:
            out.append({**e, "fieldsV1": encode(owned)})
    mine |= changed
    if mine:
        out.append(_entry(manager, "Update", api_version, mine, sub))
    new.setdefault("metadata", {})["managedFields"] = out
