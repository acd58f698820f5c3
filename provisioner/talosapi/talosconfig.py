"""Reading a ``talosconfig``: which endpoints, which CA, which client certificate.

The client is the only reader at run time, so loading lives here, beside the client; the
host-side ``provisioner.talos.talosconfig`` *writes* the file (it issues the certificate from
the cluster secrets) and imports this module to read an existing one back. The dependency
runs one way, talos -> talosapi, with no import hidden inside a function.

Format as ``talosctl`` writes it: ``context`` + ``contexts.<name>.{endpoints, ca, crt, key}``,
each PEM base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from .tls import ClientCredentials


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.load(Path(path).read_bytes(), Loader=yaml.CSafeLoader)
    except OSError as exc:
        raise InputError(f"{path}: cannot read talosconfig: {exc.strerror}") from None
    except yaml.YAMLError:
        raise InputError(f"{path}: talosconfig is not valid YAML") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("contexts"), dict) or not doc["contexts"]:
        raise InputError(f"{path}: talosconfig has no contexts")
    return doc


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("not a string")
    return base64.b64decode(text.encode("ascii"), validate=True)


def load_talosconfig(path: Path, context: str | None = None) -> tuple[list[str], bytes, bytes, bytes]:
    """(endpoints, CA PEM, client cert PEM, client key PEM) of the current (or named) context.

    The key keeps Talos's ``ED25519 PRIVATE KEY`` label; ``tls`` normalises it for ``ssl``.
    A malformed file is the operator's to fix: ``InputError`` (exit 2) naming the file.
    """
    doc = _read(path)
    name = context or doc.get("context") or next(iter(doc["contexts"]))
    ctx = doc["contexts"].get(name)
    if not isinstance(ctx, dict):
        raise InputError(f"{path}: talosconfig has no context {name!r}")
    try:
        endpoints = [str(e) for e in ctx.get("endpoints") or []]
        ca, crt, key = (_unb64(ctx[k]) for k in ("ca", "crt", "key"))
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise InputError(f"{path}: context {name!r} needs base64 ca, crt and key") from None
    return endpoints, ca, crt, key


def load_credentials(path: Path, context: str | None = None) -> ClientCredentials:
    """The context's credentials as the client takes them (see ``TalosClient.mtls``)."""
    endpoints, ca, crt, key = load_talosconfig(path, context)
    return ClientCredentials(tuple(endpoints), ca, crt, key)
