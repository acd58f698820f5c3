"""References to secrets (``env:VAR`` or ``file:PATH``), never the secrets themselves.

The inventory is committed to git; passwords are not. A ``SecretRef`` is what the inventory
holds; ``resolve`` reads the value only at the moment a driver needs it, and errors name the
reference, never the value. It lives below both the inventory model and the BMC drivers
(which own their settings models), so neither has to import the other for it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

from .errors import InputError

_REFERENCE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")


class SecretRef(str):
    """A reference to a secret; ``str(ref)`` is the reference, safe to print."""

    __slots__ = ()

    @property
    def scheme(self) -> str:
        return self.split(":", 1)[0]

    @property
    def target(self) -> str:
        return self.split(":", 1)[1]

    def resolve(self, base_dir: Path | None = None) -> str:
        if self.scheme == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise InputError(f"secret reference {self}: environment variable {self.target} is not set")
            return value
        path = Path(self.target)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise InputError(f"secret reference {self}: cannot read {path}: {exc.strerror}") from None


def _secret_ref(value: Any) -> SecretRef:
    if not isinstance(value, str) or not _REFERENCE.match(value):
        raise ValueError(
            "must be a reference, env:VARIABLE or file:PATH; put the password itself in the "
            "environment or a secrets file, never in the inventory"
        )
    return SecretRef(value)


SecretReference = Annotated[SecretRef, BeforeValidator(_secret_ref), PlainSerializer(str, return_type=str)]
