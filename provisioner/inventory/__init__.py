"""Load, validate and cross-check a site inventory.

``load_inventory`` is the only entry point the rest of the tool uses: it returns a
``Site`` that every later stage may trust, or raises ``InventoryError`` listing every
problem with file, line and field path.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .checks import check_site
from .model import Node, Site
from .problems import InventoryError, Problem
from .source import LocDict, format_path, load_document, locate

__all__ = ["Inventory", "InventoryError", "Node", "Problem", "Site", "load_inventory", "load_site"]


@dataclass(frozen=True)
class Inventory:
    site: Site
    warnings: list[Problem] = field(default_factory=list)


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of ``path``, for key suggestions."""
    current: Any = Site
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        model = _unwrap_model(current)
        if model is None:
            return None
        if part in model.model_fields:
            current = model.model_fields[part].annotation
        else:
            # a dict key such as a tenant name: step into the dict's value type
            current = _dict_value(current)
    return _unwrap_model(current)


def _unwrap_model(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _dict_value(tp: Any) -> Any:
    model = _unwrap_model(tp)
    if model is not None:
        return model
    args = typing.get_args(tp)
    return args[-1] if args else None


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
    return msg


def _from_validation_error(exc: ValidationError, doc: LocDict) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        file, line = locate(doc, loc)
        problems.append(Problem(file, line, format_path(loc), _message(err)))
    return problems


def load_inventory(path: str | Path) -> Inventory:
    """Read, validate and cross-check an inventory file or directory."""
    from ..tenants import tree_for, tree_problems

    root = Path(path)
    doc = load_document(root)
    try:
        site = Site.model_validate({**doc, "source": root})
    except ValidationError as exc:
        raise InventoryError(_from_validation_error(exc, doc)) from None

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
        raise InventoryError(errors)
    return Inventory(site, warnings)


def load_site(path: str | Path) -> Site:
    return load_inventory(path).site
