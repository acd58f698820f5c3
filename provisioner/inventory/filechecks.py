"""Files the inventory names (machine-config patches) must be there and be text.

``validate`` is the door: a patch that is missing, a directory, unreadable or not UTF-8
is reported there with the line of the inventory entry that names it, instead of
surfacing later in ``configs generate`` or half-way through ``up``. Each file is read
once however many nodes name it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .model import Site


def _problem(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"patch file {path} does not exist"
    except IsADirectoryError:
        return f"patch file {path} is a directory"
    except OSError as exc:
        return f"patch file {path} cannot be read: {exc.strerror}"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"patch file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    return None


def patch_file_problems(site: Site) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(field path, message) for every patch entry whose file cannot be used."""
    seen: dict[Path, str | None] = {}
    cluster_patches = site.cluster.talos.config_patches
    entries: list[tuple[tuple[Any, ...], str | dict[str, Any]]] = [
        (("cluster", "talos", "config_patches", i), p) for i, p in enumerate(cluster_patches)
    ]
    for n, node in enumerate(site.nodes):
        entries += [(("nodes", n, "config_patches", i), p) for i, p in enumerate(node.config_patches)]
    for field, rel in entries:
        if not isinstance(rel, str):
            continue  # an inline patch: nothing to read
        path = Path(rel) if Path(rel).is_absolute() else site.base_dir / rel
        if path not in seen:
            seen[path] = _problem(path)
        if seen[path] is not None:
            yield field, str(seen[path])
