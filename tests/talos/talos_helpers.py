"""Helpers shared by the Talos tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


_KIND_DEFS: dict[int, dict[str, str]] = {}


def _branch(validator: jsonschema.Draft202012Validator, doc: dict[str, Any]) -> dict[str, Any]:
    """The top-level ``oneOf`` branch meant for ``doc`` (by kind), for readable errors."""
    schema = validator.schema
    kinds = _KIND_DEFS.setdefault(id(schema), {
        k: name for name, d in schema["$defs"].items()
        for k in (d.get("properties", {}).get("kind", {}).get("enum") or [])
    })
    ref = kinds.get(doc.get("kind", ""), "v1alpha1.Config")
    return {"$ref": f"#/$defs/{ref}"}


def schema_errors(validator: jsonschema.Draft202012Validator, doc: dict[str, Any]) -> list[str]:
    """Validation problems of one config document against the official schema."""
    # `talosctl gen config` writes `persist: true`, Talos accepts it, but the published
    # JSON schema has no such property (and forbids unknown ones). Drop exactly that key
    # from the v1alpha1 document before validating rather than loosening the schema, so
    # every other field is still checked strictly.
    if "kind" not in doc:
        assert doc.get("persist") is True, "v1alpha1 documents must carry persist: true like talosctl's"
        doc = {k: v for k, v in doc.items() if k != "persist"}
    if validator.is_valid(doc):  # the whole schema: exactly one top-level branch matches
        return []
    schema = {k: v for k, v in validator.schema.items() if k != "oneOf"}
    branch = validator.evolve(schema={**schema, **_branch(validator, doc)})
    errors = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in branch.iter_errors(doc)]
    return errors or ["matches no (or more than one) top-level document schema"]
