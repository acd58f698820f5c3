"""The installed-OS probe's first step: a bare connect to apid's port, before any gRPC or TLS."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from provisioner.workflow import talos_ops
from provisioner.workflow.talos_ops import TalosOps, _listening


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_listening_port_is_seen_and_a_closed_one_is_not() -> None:
    async def scenario() -> tuple[bool, bool]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await _listening("127.0.0.1", port, 2.0), await _listening(
                "127.0.0.1", _closed_port(), 2.0
            )
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == (True, False)


def test_a_refusing_node_is_not_installed_without_building_a_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No talosconfig is needed and no TalosClient is made: the refused connect answers."""

    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("a TalosClient was built for a node that refuses connections")

    monkeypatch.setattr(talos_ops, "TalosClient", no_client)
    ops = TalosOps(tmp_path / "missing-talosconfig", port=_closed_port())
    assert asyncio.run(ops.secure_version("127.0.0.1")) is None


def test_a_listening_node_gets_the_real_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Something accepts on the port: the mutual-TLS probe runs (here it fails for want of a
    talosconfig, which shows it was reached)."""

    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await TalosOps(tmp_path / "missing-talosconfig", port=port).secure_version("127.0.0.1")
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(Exception, match="missing-talosconfig"):
        asyncio.run(scenario())


def test_probes_past_the_connect_hold_a_tls_connection_only_within_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three times the cap of listening nodes probed at once: every probe answers, and no more
    than ``PROBE_CONCURRENCY`` clients are open at any moment (each is a TLS connection with a
    256 KiB buffer); the rest wait for a turn. Without the cap all of them were open together."""
    cap = talos_ops.PROBE_CONCURRENCY
    open_now = peak = 0

    class Client:
        async def __aenter__(self) -> Client:
            nonlocal open_now, peak
            open_now += 1
            peak = max(peak, open_now)
            return self

        async def __aexit__(self, *exc: object) -> None:
            nonlocal open_now
            open_now -= 1

        async def version(self) -> SimpleNamespace:
            await asyncio.sleep(0.02)
            return SimpleNamespace(tag="v1.9.5")

    async def scenario() -> list[str | None]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ops = TalosOps(tmp_path / "talosconfig", port=port)
        monkeypatch.setattr(ops, "_secure", lambda ip, timeout, retry=None: Client())
        try:
            return await asyncio.gather(*(ops.secure_version("127.0.0.1") for _ in range(3 * cap)))
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == ["v1.9.5"] * (3 * cap)
    assert peak == cap
