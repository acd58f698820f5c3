"""Secret-free text of a machine config, for diffs an operator can paste anywhere.

A machine config carries the cluster's CA keys and tokens, and inventory patches add
their own secrets (registry passwords, ``auth`` blocks, encryption keys). Every value
that looks secret becomes ``<redacted sha256:…>`` of itself: a change still shows in a
diff, the value never does.

What counts as secret, decided by the key's name so that new fields are covered without
a list to maintain: any key containing ``key``, ``crt``, ``cert``, ``token``, ``secret``,
``password`` or ``auth`` (case-insensitive), the cluster ``id``, and everything below such
a key (a whole ``auth:`` block). On top, any string holding a PEM block, base64 PEM, a
Kubernetes bootstrap token or a URL password (``http://user:pw@proxy``) is redacted
wherever it sits (e.g. in ``machine.files`` or ``machine.env``).

The config is parsed and re-emitted, so flow-style mappings (``auth: {password: x}``) are
caught too; text that is not valid YAML (a hand-broken file) falls back to a line-based
pass that redacts indented blocks under a secret key.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import yaml

from . import yamlout

REDACTED_PREFIX = "<redacted sha256:"
_SECRET_WORDS = ("key", "crt", "cert", "token", "secret", "password", "auth")
_SECRET_NAMES = frozenset({"id"})  # cluster.id: with cluster.secret it identifies the cluster to discovery
# Public by nature and the most reviewed change in a config: the API certificate's names.
_PUBLIC_NAMES = frozenset({"certsans"})
# Whole subtrees, whatever their keys are called (paths of mapping keys from the top).
_SECRET_SUBTREES = (
    ("cluster", "secretboxEncryptionSecret"),
    ("cluster", "aescbcEncryptionSecret"),
    ("cluster", "token"),
    ("cluster", "secret"),
    ("machine", "token"),
    ("machine", "ca"),
    ("cluster", "ca"),
    ("cluster", "aggregatorCA"),
    ("cluster", "serviceAccount"),
    ("cluster", "etcd", "ca"),
)
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL)
_B64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]+")
_BOOTSTRAP_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
# Credentials inside a URL (a proxy in machine.env, a registry endpoint): user:password@host.
_URL_PASSWORD = re.compile(r"(?P<lead>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@/\s]+)(?=@)")


def digest(value: str) -> str:
    """A short, stable stand-in for ``value``: equal values give equal digests."""
    return f"{REDACTED_PREFIX}{hashlib.sha256(value.encode()).hexdigest()[:12]}>"


def is_secret_key(name: object) -> bool:
    """True for a mapping key whose value must never be shown."""
    if not isinstance(name, str):
        return False
    low = name.lower()
    if low in _PUBLIC_NAMES:
        return False
    return low in _SECRET_NAMES or any(word in low for word in _SECRET_WORDS)


def _redact_string(value: str) -> str:
    value = _PEM.sub(lambda m: digest(m.group(0)), value)
    value = _B64_PEM.sub(lambda m: digest(m.group(0)), value)
    value = _URL_PASSWORD.sub(lambda m: m["lead"] + digest(m["pw"]), value)
    return _BOOTSTRAP_TOKEN.sub(lambda m: digest(m.group(0)), value)


def _whole(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return digest(text)


def redact_tree(value: Any, path: tuple[str, ...] = ()) -> Any:
    """A copy of a parsed config document with every secret value replaced by its digest."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = (*path, str(k))
            secret = is_secret_key(k) or any(sub[: len(p)] == p for p in _SECRET_SUBTREES)
            out[k] = _whole(v) if secret and v not in (None, "", [], {}) else redact_tree(v, sub)
        return out
    if isinstance(value, list):
        return [redact_tree(v, path) for v in value]
    if isinstance(value, str):
        return _redact_string(value)
    return value


def redact_text(text: str) -> str:
    """The redacted text of a (multi-document) machine config."""
    try:
        docs = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    except yaml.YAMLError:
        return "".join(_redact_lines(text))
    return "---\n".join(yamlout.dump(redact_tree(d)) for d in docs if d is not None)


_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>[^\s:#'\"][^:#]*?)\s*:(?:\s+(?P<value>.*))?$")


def _redact_lines(text: str) -> list[str]:
    """Fallback for text YAML cannot parse: secret keys' values and indented blocks under them."""
    out: list[str] = []
    block_indent: int | None = None  # lines indented deeper than this belong to a secret key
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        indent = len(body) - len(body.lstrip())
        if block_indent is not None and body.strip() and indent > block_indent:
            out.append(" " * indent + digest(body.strip()) + "\n")
            continue
        block_indent = None
        m = _KEY_LINE.match(body)
        if m and is_secret_key(m["key"]):
            value = (m["value"] or "").strip()
            lead = body[: m.start("value")] if m["value"] is not None else body
            if value and value[0] not in "|>":
                out.append(f"{lead}{digest(value)}\n")
                continue
            block_indent = len(m["indent"]) + (len(m["dash"]) if m["dash"] else 0)
            out.append(body + "\n")
            continue
        out.append(_redact_string(body) + ("\n" if line.endswith("\n") else ""))
    return out
