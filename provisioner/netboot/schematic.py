"""Talos Image Factory schematic ids.

The factory names an image by the hex sha256 of the schematic's canonical YAML, which is
what Go's yaml.v3 emits for its ``Schematic`` struct: fields in struct order (``overlay``
then ``customization``), empty optional fields dropped, ``customization`` always present,
4-space indentation with sequences indented under their key. We reproduce that encoding so
``assets fetch`` can compute the id offline and the lock file can pin it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from ..errors import InputError

EMPTY_SCHEMATIC_ID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"

_CUSTOMIZATION_KEYS = ("extraKernelArgs", "meta", "systemExtensions", "secureboot")


def _scalar(value: Any) -> str:
    """One scalar as YAML (quoting decided by PyYAML, which agrees with yaml.v3 on the
    plain strings, numbers and booleans schematics hold)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True)
    return text.removesuffix("\n...\n").rstrip("\n")


def _emit(node: Any, indent: int, lines: list[str], first_prefix: str | None = None) -> None:
    """Block-style emitter with yaml.v3's layout (4 spaces; "- " items indented)."""
    pad = " " * indent
    if isinstance(node, dict):
        for i, (key, value) in enumerate(node.items()):
            lead = first_prefix if (first_prefix is not None and i == 0) else pad
            if (isinstance(value, dict) and value) or (isinstance(value, list) and value):
                lines.append(f"{lead}{key}:")
                _emit(value, indent + 4, lines)
            elif isinstance(value, dict | list):
                lines.append(f"{lead}{key}: {'{}' if isinstance(value, dict) else '[]'}")
            else:
                lines.append(f"{lead}{key}: {_scalar(value)}")
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict) and item:
                _emit(item, indent + 2, lines, first_prefix=f"{pad}- ")
            else:
                lines.append(f"{pad}- {_scalar(item)}")


def _canonical(schematic: dict[str, Any]) -> dict[str, Any]:
    """Reorder and prune ``schematic`` the way the factory's Go struct marshals it."""
    if not isinstance(schematic, dict):
        raise InputError("cluster.talos.schematic: must be a mapping like {customization: {}}")
    unknown = set(schematic) - {"overlay", "customization"}
    if unknown:
        raise InputError(f"cluster.talos.schematic: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    out: dict[str, Any] = {}
    overlay = schematic.get("overlay") or {}
    if overlay:
        ov: dict[str, Any] = {"image": str(overlay.get("image", "")), "name": str(overlay.get("name", ""))}
        if overlay.get("options"):
            ov["options"] = _sorted(overlay["options"])  # a Go map: keys marshal sorted
        out["overlay"] = ov
    cust_in = schematic.get("customization") or {}
    if not isinstance(cust_in, dict):
        raise InputError("cluster.talos.schematic.customization: must be a mapping")
    unknown = set(cust_in) - set(_CUSTOMIZATION_KEYS)
    if unknown:
        raise InputError(
            f"cluster.talos.schematic.customization: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
        )
    cust: dict[str, Any] = {}
    if cust_in.get("extraKernelArgs"):
        cust["extraKernelArgs"] = [str(a) for a in cust_in["extraKernelArgs"]]
    if cust_in.get("meta"):
        cust["meta"] = [{"key": int(m["key"]), "value": str(m["value"])} for m in cust_in["meta"]]
    ext = (cust_in.get("systemExtensions") or {}).get("officialExtensions") or []
    if ext:
        cust["systemExtensions"] = {"officialExtensions": [str(e) for e in ext]}
    if (cust_in.get("secureboot") or {}).get("includeWellKnownCertificates"):
        cust["secureboot"] = {"includeWellKnownCertificates": True}
    out["customization"] = cust
    return out


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _sorted(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def canonical_yaml(schematic: dict[str, Any]) -> str:
    """The exact text whose sha256 is the schematic id."""
    lines: list[str] = []
    _emit(_canonical(schematic), 0, lines)
    return "\n".join(lines) + "\n"


def schematic_id(schematic: dict[str, Any]) -> str:
    """Hex sha256 of the canonical YAML: the id the Image Factory gives this schematic."""
    return hashlib.sha256(canonical_yaml(schematic).encode()).hexdigest()
