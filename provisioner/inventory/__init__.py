"""Load, validate and cross-check a site inventory.

``load_inventory`` is the only entry point the rest of the tool uses: it returns a
``Site`` that every later stage may trust, or raises ``InventoryError`` listing every
problem with file, line and field path.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .checks import check_site
from .model import Node, Site
from .problems import InventoryError, Problem, kind_of
from .source import LocDict, format_path, load_document, locate
from .tenants import tree_for, tree_problems

__all__ = ["Inventory", "InventoryError", "Node", "Problem", "Site", "load_inventory", "load_site"]


@dataclass(frozen=True)
class Inventory:
    site: Site
    warnings: list[Problem] = field(default_factory=list)


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of ``path``, for key suggestions."""
    current: Any = Site
    for part in path[:-1]:
        current = _strip(current)
        origin = typing.get_origin(current)
        if origin is dict:  # a dict key such as a tenant name: step into the value type
            current = typing.get_args(current)[1]
        elif origin is list:
            current = typing.get_args(current)[0]
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return None
    current = _strip(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _message(err: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(tuple(loc))
        msg = f"unknown key {key!r}"
        if model is not None:
            close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
            if close:
                msg += f"; did you mean {close[0]!r}?"
            else:
                allowed = [f for f in model.model_fields if f != "source"]
                msg += f" (allowed: {', '.join(allowed)})"
        return msg
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind in ("enum", "literal_error"):
        msg = f"{msg}, got {err.get('input')!r}"
    elif kind.endswith("_type") and "input" in err:
        msg = f"{msg}, got {kind_of(err['input'])}"
        if kind == "string_type" and isinstance(err["input"], int | float):
            msg += f" (write '{err['input']}' in quotes to make it text)"
    return msg


def _from_validation_error(exc: ValidationError, doc: LocDict) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        # pydantic adds "[key]" when a dict key is wrong and "function-..." for validators;
        # neither is part of the operator's field path
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and (p == "[key]" or p.startswith("function-")))
        )
        file, line = locate(doc, loc)
        problems.append(Problem(file, line, format_path(loc), _message(err)))
    return problems


def load_inventory(path: str | Path) -> Inventory:
    """Read, validate and cross-check an inventory file or directory."""
    root = Path(path)
    doc = load_document(root)
    try:
        site = Site.model_validate({**doc, "source": root})
    except ValidationError as exc:
        raise InventoryError(_in_reading_order(_from_validation_error(exc, doc))) from None

    errors: list[Problem] = []
    warnings: list[Problem] = []
    findings = [(f.path, f.message, f.severity) for f in check_site(site)]
    if site.tenants is not None:
        findings += [(p, m, "error") for p, m in tree_problems(tree_for(site))]
    for fpath, message, severity in findings:
        file, line = locate(doc, fpath)
        problem = Problem(file, line, format_path(fpath), message, severity)
        (errors if severity == "error" else warnings).append(problem)
    if errors:
        raise InventoryError(_in_reading_order(errors))
    return Inventory(site, _in_reading_order(warnings))


def _in_reading_order(problems: list[Problem]) -> list[Problem]:
    """Sorted by file and line, so an operator can fix them top to bottom."""
    return sorted(problems, key=lambda p: (p.file, p.line))


def load_site(path: str | Path) -> Site:
    return load_inventory(path).site
