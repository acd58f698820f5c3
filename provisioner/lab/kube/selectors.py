"""Label selectors (equality and set-based) and the field selectors the stand-in supports.

Grammar as in apimachinery's ``labels.Parse``: comma-separated requirements, each ``k``, ``!k``,
``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``. Field selectors: ``metadata.name``
and ``metadata.namespace`` with ``=``, ``==`` and ``!=``; anything else is refused (400), as the real
server refuses a field label it does not index.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

FIELDS = {"metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace")}


class SelectorError(ValueError):
    """A selector that cannot be parsed; the message says which part."""


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


_SET = re.compile(r"^([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ = re.compile(r"^([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=(),]*)$")
_KEY = re.compile(r"^(!?)\s*([^\s!=(),]+)$")


def parse_labels(text: str | None) -> Matcher | None:
    """A predicate over an object's ``metadata.labels``, or None for "everything"."""
    if not text or not text.strip():
        return None
    reqs: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top(text):
        if m := _SET.match(part):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif m := _EQ.match(part):
            key, op, value = m.groups()
            if op == "!=":
                reqs.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=key, v=value: k in lb and lb[k] == v)
        elif m := _KEY.match(part):
            neg, key = m.groups()
            if neg:
                reqs.append(lambda lb, k=key: k not in lb)
            else:
                reqs.append(lambda lb, k=key: k in lb)
        else:
            raise SelectorError(f"unable to parse requirement: {part!r}")

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


def parse_fields(text: str | None) -> Matcher | None:
    """A predicate for ``metadata.name`` / ``metadata.namespace`` field selectors, or None."""
    if not text or not text.strip():
        return None
    reqs: list[Matcher] = []
    for part in _split_top(text):
        m = re.match(r"^([^\s!=]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        field, op, value = m.groups()
        if field not in FIELDS:
            raise SelectorError(f'field label not supported: "{field}"')
        a, b = FIELDS[field]
        if op == "!=":
            reqs.append(lambda o, a=a, b=b, v=value: (o.get(a) or {}).get(b, "") != v)
        else:
            reqs.append(lambda o, a=a, b=b, v=value: (o.get(a) or {}).get(b, "") == v)
    return lambda obj: all(r(obj) for r in reqs)


def combine(*matchers: Matcher | None) -> Matcher | None:
    active = [m for m in matchers if m is not None]
    if not active:
        return None
    return lambda obj: all(m(obj) for m in active)
