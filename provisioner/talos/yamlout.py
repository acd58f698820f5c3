"""Deterministic YAML for machine configs (libyaml emitter, insertion order, no aliases).

Multi-line strings (file contents) are written as literal blocks so an operator can read
them; nothing is folded (base64 PEM stays on one line); shared subtrees are written out in
full rather than as anchors, which Talos's parser would accept but humans would not.
"""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.CSafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: _Dumper, value: str) -> yaml.Node:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, indent=4,
                     width=1 << 16, allow_unicode=True)


def load_all(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
