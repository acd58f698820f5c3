"""Strict reading of the JSON records in the state directory.

A node record or ``cluster.json`` that cannot be read is never guessed at. Reading it as
"blank" would reinstall an installed node; reading it as "not bootstrapped" could
bootstrap etcd a second time. So a malformed record stops the run with exit 2, naming the
file, what is wrong with it, and how to recover, before anything touches a machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError

# field -> accepted JSON types (None in the tuple: null allowed)
Shape = dict[str, tuple[type | None, ...]]

NODE_RECORD_SHAPE: Shape = {
    "name": (str,),
    "phase": (str,),
    "installed": (bool,),
    "attempts": (int,),
    "error": (str, None),
    "last_event": (int,),
    "updated": (float, int),
    "extra": (dict,),
}
CLUSTER_RECORD_SHAPE: Shape = {
    "bootstrapped": (bool,),
    "bootstrap_node": (str, None),
    "formed": (bool,),
    "members": (list, None),
}


class MalformedState(InputError):
    """A state file exists but cannot be trusted (exit 2): the message names it and says how
    to recover."""

    def __init__(self, path: Path, problem: str, recovery: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.recovery = recovery
        super().__init__(f"{path}: {problem}. {recovery}")


def node_recovery(path: Path, node: str) -> str:
    return (
        f"Nothing was changed. `provisioner status` shows every node's state; to start node {node} "
        f"over, run `provisioner --node {node} reset` (wipes it) or remove {path} and rerun "
        f"`provisioner up` (the node is then treated as blank and installed again)"
    )


def cluster_recovery(path: Path) -> str:
    return (
        "Nothing was changed. If etcd is already bootstrapped, restore the file from a backup "
        f"or remove {path}: the rerun asks the control planes for etcd members before any "
        "bootstrap, and records what it finds"
    )


def _type_name(types: tuple[type | None, ...]) -> str:
    names: dict[type | None, str] = {
        str: "a string",
        bool: "true/false",
        int: "an integer",
        float: "a number",
        dict: "a mapping",
        list: "a list",
        None: "null",
    }
    return " or ".join(names.get(t, str(t)) for t in types)


def _check(raw: Any, shape: Shape, required: tuple[str, ...]) -> str | None:
    """The first problem with ``raw`` against ``shape``, or None."""
    if not isinstance(raw, dict):
        return f"expected a JSON object, found {type(raw).__name__}"
    for key in required:
        if key not in raw:
            return f"field {key!r} is missing"
    for key, types in shape.items():
        if key not in raw:
            continue
        value = raw[key]
        ok = any(
            (value is None)
            if t is None
            else (isinstance(value, t) and not (t is int and isinstance(value, bool)))
            for t in types
        )
        if not ok:
            return f"field {key!r} must be {_type_name(types)}, found {json.dumps(value)[:40]}"
    return None


def read_record(
    path: Path, shape: Shape, recovery: str, required: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The record at ``path`` as a mapping; None when there is none; ``MalformedState``
    when it is unreadable, not JSON, or a field has the wrong type."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MalformedState(path, f"cannot be read ({exc.strerror})", recovery) from None
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedState(path, "is not UTF-8 text", recovery) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        why = "is empty" if not data.strip() else f"is not valid JSON ({exc.msg} at {where})"
        raise MalformedState(path, why, recovery) from None
    problem = _check(raw, shape, required)
    if problem is not None:
        raise MalformedState(path, problem, recovery)
    return dict(raw)


def read_cluster_record(path: Path) -> dict[str, Any] | None:
    """``cluster.json``: None when absent (nothing bootstrapped yet, as far as the tool knows)."""
    raw = read_record(path, CLUSTER_RECORD_SHAPE, cluster_recovery(path))
    if (
        raw is not None
        and raw.get("members") is not None
        and not all(isinstance(m, str) for m in raw["members"])
    ):
        raise MalformedState(path, "field 'members' must be a list of node names", cluster_recovery(path))
    return raw
