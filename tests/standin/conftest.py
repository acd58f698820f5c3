"""Fixtures for the stand-in agent tests: a netboot-like HTTP server and agent processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from standin_helpers import Machine, Netboot, Secrets, loopback_prefix


@pytest.fixture
def netboot() -> Iterator[Netboot]:
    server = Netboot()
    yield server
    server.close()


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    return Secrets.new()


@pytest.fixture
def prefix() -> str:
    return loopback_prefix()


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Callable[..., Machine]]:
    """Factory of started stand-in machines; every one is stopped (with its etcd) at teardown."""
    started: list[Machine] = []

    def make(
        name: str, address: str, cmdline: str, uuid: str = "", extra_args: tuple[str, ...] = ()
    ) -> Machine:
        uuid = uuid or f"00000000-0000-4000-8000-{len(started):012d}"
        m = Machine(tmp_path / name, address, name, uuid, cmdline, extra_args=extra_args)
        m.start()
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()
