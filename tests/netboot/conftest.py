"""Fixtures of the netboot tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from netboot_sites import make_site

from provisioner.events import EventLog
from provisioner.inventory.model import Site
from provisioner.state import StateStore


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path / "state")


@pytest.fixture
def store(site: Site) -> StateStore:
    return StateStore(site.state_dir)


@pytest.fixture
def events(store: StateStore) -> EventLog:
    return EventLog(store.events_path)
