"""What a regeneration would change in the configs on disk, without writing anything.

Configs hold keys and tokens, so both sides are redacted before diffing: a secret value
becomes ``<redacted sha256:…>`` of the value (a change still shows, the value does not),
and base64 PEM blocks (certificates too: long and unreadable) become their digest.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..inventory.model import Node, Site
from .configs import configs_dir, render_all
from .secrets import load_secrets, secrets_path

_SECRET_KEYS = re.compile(
    r"^(?P<lead>\s*(?:-\s+)?(?:key|token|secret|id|secretboxEncryptionSecret|aescbcEncryptionSecret)\s*:\s*)"
    r"(?P<value>\S.*)$"
)
_B64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]+")


def _digest(value: str) -> str:
    return f"<redacted sha256:{hashlib.sha256(value.encode()).hexdigest()[:12]}>"


def redact(text: str) -> list[str]:
    out = []
    for line in text.splitlines(keepends=True):
        m = _SECRET_KEYS.match(line.rstrip("\n"))
        if m:
            line = m["lead"] + _digest(m["value"]) + "\n"
        else:
            line = _B64_PEM.sub(lambda mm: _digest(mm.group(0)), line)
        out.append(line)
    return out


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
