"""YAML loading that remembers where every value came from.

Operators fix errors by going to a file and line, so every mapping and sequence the
loader builds carries the file and line of each of its entries. A directory inventory is
merged into one document (mappings merged key by key, sequences concatenated) without
losing those locations.

Speed matters (a 10,000-node site must load in well under 3 s), so the document is
built straight from libyaml's event stream: PyYAML's own composer builds a node graph
and resolves every scalar through a chain of regular expressions, which costs several
times more than the parse itself. Plain scalars resolve once per distinct text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from .problems import InventoryError, Problem, kind_of

Loc = tuple[str, int]  # (file, 1-based line)

try:  # libyaml's parser; the pure-Python one gives the same events, only slower
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


# Guards against documents crafted to explode once aliases are expanded ("billion
# laughs"): no real inventory comes near this many values.
MAX_VALUES = 20_000_000

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_IMPLICIT = Resolver.yaml_implicit_resolvers
_CONSTRUCTOR = SafeConstructor()


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


class _Frame:
    """A mapping or sequence being filled while its events stream past."""

    __slots__ = ("anchor", "container", "is_map", "key", "key_loc", "merge_next", "merges", "size")

    def __init__(self, container: LocDict | LocList, anchor: str | None) -> None:
        self.container = container
        self.is_map = isinstance(container, LocDict)
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.key_loc: Loc = container.loc
        self.merge_next = False
        self.merges: list[tuple[LocDict, Loc]] = []
        self.size = 1


_NO_KEY = object()
_SCALAR_KEY_TYPES = (str, int, bool, float, type(None))


def _stack_path(stack: list[_Frame]) -> list[Any]:
    """The field path of the innermost open container, for error messages."""
    path: list[Any] = []
    for outer in stack[:-1]:  # each holds the next one at its current key or index
        path.append(len(outer.container) if isinstance(outer.container, LocList) else outer.key)
    return path


def _resolve_plain(value: str) -> str:
    """The tag of a plain (unquoted) scalar, as the YAML 1.1 core schema says."""
    for tag, regexp in _IMPLICIT.get(value[0] if value else "", ()):
        if regexp.match(value):
            return str(tag)
    return _STR_TAG


class _Builder:
    """Turns one document's events into LocDict/LocList/scalars."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded size)
        self.open_anchors: set[str] = set()
        self.plain_tags: dict[str, str] = {}
        self.constructed: dict[tuple[str, str], Any] = {}
        self.total = 0

    def fail(self, line: int, message: str, path: str = "") -> InventoryError:
        return InventoryError([Problem(self.label, line, path, message)])

    def scalar(self, event: Any) -> Any:
        value: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            if event.implicit[0]:
                tag = self.plain_tags.get(value)
                if tag is None:
                    tag = self.plain_tags[value] = _resolve_plain(value)
            else:
                tag = _STR_TAG
        if tag == _STR_TAG:
            return value
        if tag == _MERGE_TAG:
            return _MERGE
        key = (tag, value)
        if key in self.constructed:
            return self.constructed[key]
        make = _CONSTRUCTOR.yaml_constructors.get(tag)
        if make is None:
            raise self.fail(event.start_mark.line + 1, f"unsupported YAML tag {tag}")
        try:
            result = make(_CONSTRUCTOR, yaml.ScalarNode(tag, value, event.start_mark, event.end_mark))
        except (ConstructorError, ValueError, TypeError, OverflowError) as exc:
            kind = tag.rsplit(":", 1)[-1]
            raise self.fail(event.start_mark.line + 1, f"cannot read {value!r} as {kind}: {exc}") from None
        self.constructed[key] = result
        return result

    def build(self, parser: Any) -> Any:
        stack: list[_Frame] = []
        result: Any = None
        documents = 0
        while True:
            event = parser.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return result
            line = event.start_mark.line + 1
            size = 1
            if isinstance(event, yaml.ScalarEvent):
                value = self.scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1)
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                is_map = isinstance(event, yaml.MappingStartEvent)
                if event.tag not in (None, "!", _MAP_TAG if is_map else _SEQ_TAG):
                    raise self.fail(line, f"unsupported YAML tag {event.tag}")
                if stack and stack[-1].is_map and stack[-1].key is _NO_KEY:
                    raise self.fail(line, "mapping keys must be plain scalars, not a mapping or list")
                container: LocDict | LocList = (
                    LocDict((self.label, line)) if is_map else LocList((self.label, line))
                )
                if event.anchor is not None:
                    self.open_anchors.add(event.anchor)
                stack.append(_Frame(container, event.anchor))
                continue
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                frame = stack.pop()
                value = frame.container
                if isinstance(value, LocDict):
                    for source, loc in frame.merges:
                        for k, v in source.items():
                            if k not in value:
                                value[k] = v
                                value.key_locs[k] = source.key_locs.get(k, loc)
                size = frame.size
                line = value.loc[1]  # an item is located where it starts, not where it ends
                if frame.anchor is not None:
                    self.open_anchors.discard(frame.anchor)
                    self.anchors[frame.anchor] = (value, size)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor in self.open_anchors:
                    raise self.fail(line, f"alias *{event.anchor} refers to a value that contains it")
                if event.anchor not in self.anchors:
                    raise self.fail(line, f"alias *{event.anchor} has no anchor &{event.anchor} before it")
                value, size = self.anchors[event.anchor]
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise self.fail(line, "only one YAML document per file (found a second '---')")
                continue
            else:  # stream start, document end
                continue

            if value is _MERGE and not (stack and stack[-1].is_map and stack[-1].key is _NO_KEY):
                value = "<<"  # only a key '<<' merges; anywhere else it is text
            self.total += size
            if self.total > MAX_VALUES:
                raise self.fail(line, "document too large once aliases are expanded")
            if not stack:
                result = value
                continue
            frame = stack[-1]
            frame.size += size
            container = frame.container
            if isinstance(container, LocList):
                container.append(value)
                container.item_locs.append((self.label, line))
            elif frame.key is _NO_KEY:
                if value is _MERGE:
                    frame.merge_next = True
                    frame.key = value
                elif not isinstance(value, _SCALAR_KEY_TYPES):
                    raise self.fail(line, "mapping keys must be plain scalars (text or numbers)")
                elif value in container:
                    first = container.key_locs[value][1]
                    where = format_path((*_stack_path(stack), value))
                    raise self.fail(line, f"duplicate key {value!r} (first defined on line {first})", where)
                else:
                    frame.key = value
                    frame.key_loc = (self.label, line)
            else:
                if frame.merge_next:
                    self._add_merge(frame, value, line)
                    frame.merge_next = False
                else:
                    container[frame.key] = value
                    container.key_locs[frame.key] = frame.key_loc
                frame.key = _NO_KEY

    def _add_merge(self, frame: _Frame, value: Any, line: int) -> None:
        sources = value if isinstance(value, LocList) else [value]
        for source in sources:
            if not isinstance(source, LocDict):
                raise self.fail(line, "a merge key '<<' needs a mapping or a list of mappings")
            frame.merges.append((source, (self.label, line)))


class _MergeKey:
    def __repr__(self) -> str:
        return "<<"


_MERGE = _MergeKey()


def load_yaml_text(text: str, label: str) -> Any:
    """Parse one YAML document, turning syntax errors into located problems."""
    parser = _Parser(text)
    try:
        return _Builder(label).build(parser)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise InventoryError([Problem(label, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. a NUL byte
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        what = f"character #x{code:04x} is not allowed ({exc.reason})"
        raise InventoryError([Problem(label, line, "", f"YAML error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise InventoryError([Problem(label, 0, "", f"YAML error: {exc}")]) from None
    finally:
        dispose = getattr(parser, "dispose", None)
        if dispose is not None:
            dispose()


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
        raise InventoryError(
            [Problem(_display(path), 0, "", "inventory path is neither a file nor a directory")]
        )
    files = sorted(
        (p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()),
        key=lambda p: (len(p.relative_to(path).parts), p.name != "site.yaml", str(p.relative_to(path))),
    )
    # Lock files and patches live beside the inventory but are not part of the site document.
    files = [
        f for f in files if not f.name.endswith(".lock.yaml") and "patches" not in f.relative_to(path).parts
    ]
    if not files:
        raise InventoryError([Problem(_display(path), 0, "", "no YAML files in inventory directory")])
    return files


class MergeConflict(Exception):
    """Two files set the same scalar differently; carries the field path."""

    def __init__(self, path: tuple[Any, ...]) -> None:
        super().__init__(format_path(path))
        self.path = path


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
    if type(into) is type(other) and into == other:
        return into
    raise MergeConflict(path)


def load_document(path: Path) -> LocDict:
    """Load an inventory file or directory into one located mapping."""
    docs: list[tuple[Path, Any]] = [(f, load_yaml_file(f)) for f in inventory_files(path)]
    merged: LocDict | None = None
    for file, doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, LocDict):
            line = doc.loc[1] if isinstance(doc, LocList) else 1
            message = f"the document must be a mapping of sections, not {kind_of(doc)}"
            raise InventoryError([Problem(_display(file), line, "", message)])
        if merged is None:
            merged = doc
            continue
        try:
            merge(merged, doc)
        except MergeConflict as exc:
            loc = locate(doc, exc.path)
            first = locate(merged, exc.path)  # the conflicting entry is left as the first file set it
            raise InventoryError(
                [
                    Problem(
                        loc[0],
                        loc[1],
                        format_path(exc.path),
                        f"defined twice with different values (also set at {first[0]}:{first[1]}); "
                        "a directory inventory may set each value in one file only",
                    )
                ]
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
