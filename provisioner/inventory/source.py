"""YAML loading that remembers where every value came from.

Operators fix errors by going to a file and line, so every mapping and sequence the
loader builds carries the file and line of each of its entries. A directory inventory is
merged into one document (mappings merged key by key, sequences concatenated) without
losing those locations. libyaml's C parser does the parsing so large sites load fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .problems import InventoryError, Problem

Loc = tuple[str, int]  # (file, 1-based line)

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LocDict(dict[Any, Any]):
    """A mapping that knows its own location and the location of each key."""

    __slots__ = ("key_locs", "loc")

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.key_locs: dict[Any, Loc] = {}


class LocList(list[Any]):
    """A sequence that knows its own location and the location of each item."""

    __slots__ = ("item_locs", "loc")

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.item_locs: list[Loc] = []


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    file_label = "<inventory>"


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LocDict:
    loader.flatten_mapping(node)
    result = LocDict((loader.file_label, node.start_mark.line + 1))
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key_loc = (loader.file_label, key_node.start_mark.line + 1)
        if not isinstance(key, str | int | bool | float | type(None)):
            raise InventoryError([Problem(key_loc[0], key_loc[1], "", "mapping keys must be plain scalars")])
        if key in result:
            first = result.key_locs[key]
            raise InventoryError(
                [Problem(key_loc[0], key_loc[1], str(key), f"duplicate key (first defined on line {first[1]})")]
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_locs[key] = key_loc
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LocList:
    result = LocList((loader.file_label, node.start_mark.line + 1))
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_locs.append((loader.file_label, item.start_mark.line + 1))
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_yaml_text(text: str, label: str) -> Any:
    """Parse one YAML document, turning syntax errors into located problems."""
    loader = _Loader(text)
    loader.file_label = label
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise InventoryError([Problem(label, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise InventoryError([Problem(label, 0, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_yaml_file(path: Path) -> Any:
    label = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError([Problem(label, 0, "", f"not UTF-8 text: {exc.reason}")]) from None
    except OSError as exc:
        raise InventoryError([Problem(label, 0, "", f"cannot read: {exc.strerror}")]) from None
    return load_yaml_text(text, label)


def inventory_files(path: Path) -> list[Path]:
    """The YAML files of an inventory path, in merge order.

    A directory contributes every ``*.yaml``/``*.yml`` below it: top-level files first
    (``site.yaml`` before the others), then sub-directories, each sorted by name, so
    the merge order never depends on the filesystem.
    """
    if path.is_file():
        return [path]
    if not path.exists():
        raise InventoryError([Problem(_display(path), 0, "", "inventory path does not exist")])
    if not path.is_dir():
        raise InventoryError([Problem(_display(path), 0, "", "inventory path is neither a file nor a directory")])
    files = sorted(
        (p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()),
        key=lambda p: (len(p.relative_to(path).parts), p.name != "site.yaml", str(p.relative_to(path))),
    )
    # Lock files and patches live beside the inventory but are not part of the site document.
    files = [f for f in files if not f.name.endswith(".lock.yaml") and "patches" not in f.relative_to(path).parts]
    if not files:
        raise InventoryError([Problem(_display(path), 0, "", "no YAML files in inventory directory")])
    return files


def merge(into: Any, other: Any, path: tuple[Any, ...] = ()) -> Any:
    """Deep-merge ``other`` into ``into``: mappings by key, sequences concatenated.

    Two files giving different scalars for the same key is an error: silently letting
    the later file win would hide an operator's mistake.
    """
    if isinstance(into, LocDict) and isinstance(other, LocDict):
        for key, value in other.items():
            if key in into:
                into[key] = merge(into[key], value, (*path, key))
            else:
                into[key] = value
                into.key_locs[key] = other.key_locs[key]
        return into
    if isinstance(into, LocList) and isinstance(other, LocList):
        into.extend(other)
        into.item_locs.extend(other.item_locs)
        return into
    if into == other:
        return into
    raise InventoryError([Problem("", 0, format_path(path), "defined twice with different values")])


def load_document(path: Path) -> LocDict:
    """Load an inventory file or directory into one located mapping."""
    docs: list[tuple[Path, Any]] = [(f, load_yaml_file(f)) for f in inventory_files(path)]
    merged: LocDict | None = None
    for file, doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, LocDict):
            raise InventoryError([Problem(_display(file), 1, "", "the document must be a mapping of sections")])
        if merged is None:
            merged = doc
            continue
        try:
            merge(merged, doc)
        except InventoryError as exc:
            problem = exc.problems[0]
            loc = locate(doc, parse_path(problem.path))
            first = locate(merged, parse_path(problem.path))
            raise InventoryError(
                [Problem(loc[0], loc[1], problem.path, f"{problem.message} (also set at {first[0]}:{first[1]})")]
            ) from None
    if merged is None:
        raise InventoryError([Problem(_display(path), 0, "", "inventory is empty")])
    return merged


def locate(doc: Any, path: Sequence[Any]) -> Loc:
    """The deepest known location on ``path``: the entry itself, or its nearest parent."""
    loc: Loc = getattr(doc, "loc", ("<inventory>", 0))
    node = doc
    for part in path:
        if isinstance(node, LocDict) and part in node:
            loc = node.key_locs[part]
            node = node[part]
        elif isinstance(node, LocList) and isinstance(part, int) and 0 <= part < len(node):
            loc = node.item_locs[part]
            node = node[part]
        else:
            break
    return loc


def format_path(path: Iterable[Any]) -> str:
    """``('nodes', 3, 'bmc', 'address')`` -> ``nodes[3].bmc.address``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_path(text: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for chunk in text.replace("[", ".[").split("."):
        if not chunk:
            continue
        if chunk.startswith("[") and chunk.endswith("]"):
            parts.append(int(chunk[1:-1]))
        else:
            parts.append(chunk)
    return tuple(parts)


@dataclass(frozen=True)
class Located:
    """A loaded inventory document and the path it came from."""

    root: Path
    doc: LocDict
