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


LabelTest = Callable[[dict[str, str]], bool]


def _in(key: str, values: set[str]) -> LabelTest:
    return lambda labels: labels.get(key) in values


def _eq(key: str, value: str) -> LabelTest:
    return lambda labels: key in labels and labels[key] == value


def _has(key: str) -> LabelTest:
    return lambda labels: key in labels


def _not(test: LabelTest) -> LabelTest:
    return lambda labels: not test(labels)


def parse_labels(text: str | None) -> Matcher | None:
    """A predicate over an object's ``metadata.labels``, or None for "everything"."""
    if not text or not text.strip():
        return None
    reqs: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top(text):
        if m := _SET.match(part):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append(_in(key, values) if op == "in" else _not(_in(key, values)))
        elif m := _EQ.match(part):
            key, op, value = m.groups()
            reqs.append(_not(_eq(key, value)) if op == "!=" else _eq(key, value))
        elif m := _KEY.match(part):
            neg, key = m.groups()
            reqs.append(_not(_has(key)) if neg else _has(key))
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
        reqs.append(_field(FIELDS[field], value, op == "!="))
    return lambda obj: all(r(obj) for r in reqs)


def _field(path: tuple[str, str], value: str, negate: bool) -> Matcher:
    def test(obj: dict[str, Any]) -> bool:
        return ((obj.get(path[0]) or {}).get(path[1], "") == value) != negate

    return test


def combine(*matchers: Matcher | None) -> Matcher | None:
    active = [m for m in matchers if m is not None]
    if not active:
        return None
    return lambda obj: all(m(obj) for m in active)
