"""Fixtures for the Talos secrets/config tests.

The secrets bundle (RSA-4096 inside) is generated once per session and copied into each
test's state directory; sites are built from the lab inventory written to tmp_path, so
patch files can sit next to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from provisioner.inventory import Site, load_inventory
from provisioner.talos.secrets import SecretsBundle, generate_secrets

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "examples" / "lab.yaml"
# Copied into the repository (see tests/data/talos-schemas/SOURCE.md): a fresh clone tests on its own.
SCHEMA_DIR = REPO / "tests" / "data" / "talos-schemas"
SCHEMAS = {
    "v1.11.6": SCHEMA_DIR / "config.schema.v1.11.json",
    "v1.13.0": SCHEMA_DIR / "config.schema.v1.13.json",
}


@pytest.fixture(scope="session")
def bundle() -> SecretsBundle:
    return generate_secrets()


@pytest.fixture(scope="session")
def validators() -> dict[str, jsonschema.Draft202012Validator]:
    out = {}
    for version, path in SCHEMAS.items():
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        out[version] = jsonschema.Draft202012Validator(schema)
    return out


SiteFactory = Callable[..., Site]


@pytest.fixture
def make_site(tmp_path: Path, bundle: SecretsBundle) -> SiteFactory:
    """Build a Site from the lab inventory with changes; state goes to tmp_path/state and
    already holds the session's secrets bundle (``with_secrets=False`` leaves it empty)."""

    def factory(
        version: str = "v1.11.6",
        cluster_patches: list[str] | None = None,
        node_patches: dict[str, list[str]] | None = None,
        with_secrets: bool = True,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Site:
        data = yaml.safe_load(LAB.read_text())
        state = tmp_path / "state"
        data["cluster"]["state_dir"] = str(state)
        data["cluster"]["talos"]["version"] = version
        if cluster_patches:
            data["cluster"]["talos"]["config_patches"] = cluster_patches
        for node in data["nodes"]:
            if node_patches and node["name"] in node_patches:
                node["config_patches"] = node_patches[node["name"]]
        if edit is not None:
            edit(data)
        inv = tmp_path / "site.yaml"
        inv.write_text(yaml.safe_dump(data, sort_keys=False))
        if with_secrets and not (state / "secrets.yaml").exists():
            state.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(state / "secrets.yaml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(bundle.to_yaml())
        return load_inventory(inv).site

    return factory
