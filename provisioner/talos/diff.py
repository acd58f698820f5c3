"""What a regeneration would change in the configs on disk, without writing anything.

Configs hold keys and tokens, and patches add more (registry passwords, auth blocks), so
both sides are redacted before diffing (``redact.py``): a secret value becomes
``<redacted sha256:…>`` of the value (a change still shows, the value does not).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..inventory.model import Node, Site
from .configs import configs_dir, render_all
from .redact import redact_text
from .secrets import load_secrets, secrets_path


def redact(text: str) -> list[str]:
    """Lines of ``text`` with every secret-looking value replaced by its digest (``redact.py``)."""
    return redact_text(text).splitlines(keepends=True)


@dataclass(frozen=True)
class ConfigDiff:
    node: str
    path: Path
    status: str  # new | changed | unchanged
    diff: str  # unified diff of redacted text ("" unless changed)


def diff_configs(site: Site, nodes: Iterable[Node | str] | None = None) -> list[ConfigDiff]:
    """Render the selected nodes as ``configs generate`` would and compare with the files.

    Without a secrets bundle there is nothing to compare: every config would be new (and
    secrets would be generated first), so no rendering happens and nothing is created.
    """
    out_dir = configs_dir(site)
    if not secrets_path(site).exists():
        names = [n.name if isinstance(n, Node) else n for n in (nodes if nodes is not None else site.nodes)]
        return [ConfigDiff(name, out_dir / f"{name}.yaml", "new", "") for name in names]
    rendered = render_all(site, load_secrets(secrets_path(site)), nodes)
    result = []
    for name, data in rendered.items():
        path = out_dir / f"{name}.yaml"
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            result.append(ConfigDiff(name, path, "new", ""))
            continue
        if old == data:
            result.append(ConfigDiff(name, path, "unchanged", ""))
            continue
        lines = difflib.unified_diff(
            redact(old.decode(errors="replace")), redact(data.decode()),
            f"{path} (on disk)", f"{path} (regenerated)",
        )
        result.append(ConfigDiff(name, path, "changed", "".join(lines)))
    return result
