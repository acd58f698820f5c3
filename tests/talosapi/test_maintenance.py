"""Maintenance mode: the real client against the stand-in's apid with a self-signed cert (server-only TLS)."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.talosapi.client import ApplyMode, TalosClient
from provisioner.talosapi.errors import TalosRefused, TalosTLSError

from .conftest import CONFIG_OK, FAST_RETRY, RecordingBackend, maintenance_server

pytestmark = pytest.mark.timeout(60)


def _client(port: int, pin: str | None = None) -> TalosClient:
    return TalosClient.maintenance("127.0.0.1", port=port, pin=pin, node="cp1", timeout=5, retry=FAST_RETRY)


def test_apply_accepted_and_passed_to_backend(backend: RecordingBackend) -> None:
    async def scenario() -> None:
        async with maintenance_server(backend) as server, _client(server.port) as client:
            result = await client.apply_configuration(CONFIG_OK, mode=ApplyMode.AUTO)
            assert result.hostname == "cp1"
            assert result.mode is ApplyMode.AUTO
            assert result.warnings == ("stand-in warning",)
            assert "installing" in result.mode_details

    asyncio.run(scenario())
    assert backend.calls_to("apply_config") == [(CONFIG_OK, ApplyMode.AUTO, False)]


def test_apply_dry_run_reaches_backend_as_dry_run(backend: RecordingBackend) -> None:
    async def scenario() -> str:
        async with maintenance_server(backend) as server, _client(server.port) as client:
            return (
                await client.apply_configuration(CONFIG_OK, mode=ApplyMode.REBOOT, dry_run=True)
            ).mode_details

    details = asyncio.run(scenario())
    assert details.startswith("Dry run")
    assert backend.calls_to("apply_config") == [(CONFIG_OK, ApplyMode.REBOOT, True)]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (CONFIG_OK.replace(b"version: v1alpha1", b"version: v1alpha2"), "not a v1alpha1 machine config"),
        (b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n", "no top-level 'version'"),
        (CONFIG_OK.split(b"cluster:")[0], "missing top-level cluster"),
        (b"\xff\xfe binary", "not UTF-8"),
    ],
)
def test_apply_refuses_what_is_not_a_v1alpha1_config(
    backend: RecordingBackend, config: bytes, expected: str
) -> None:
    async def scenario() -> None:
        async with maintenance_server(backend) as server, _client(server.port) as client:
            await client.apply_configuration(config)

    with pytest.raises(TalosRefused) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "INVALID_ARGUMENT"
    assert expected in str(err.value)
    assert "ApplyConfiguration" in str(err.value) and "127.0.0.1" in str(err.value)
    assert backend.calls_to("apply_config") == []


def test_apply_refuses_unknown_install_disk_even_in_dry_run(backend: RecordingBackend) -> None:
    config = CONFIG_OK.replace(b"disk: /dev/sda", b"disk: /dev/nvme9n1")

    async def scenario() -> None:
        async with maintenance_server(backend) as server, _client(server.port) as client:
            await client.apply_configuration(config, dry_run=True)

    with pytest.raises(TalosRefused) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "INVALID_ARGUMENT"
    assert "/dev/nvme9n1" in str(err.value) and "/dev/sda, /dev/vda" in str(err.value)
    assert backend.calls == []


def test_maintenance_refuses_staged_mode(backend: RecordingBackend) -> None:
    async def scenario() -> None:
        async with maintenance_server(backend) as server, _client(server.port) as client:
            await client.apply_configuration(CONFIG_OK, mode=ApplyMode.STAGED)

    with pytest.raises(TalosRefused, match="STAGED"):
        asyncio.run(scenario())
    assert backend.calls == []


def test_maintenance_has_no_bootstrap(backend: RecordingBackend) -> None:
    async def scenario() -> None:
        async with maintenance_server(backend) as server, _client(server.port) as client:
            await client.bootstrap()

    with pytest.raises(TalosRefused) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "UNIMPLEMENTED"
    assert backend.calls == []


def test_spki_pin_match_is_accepted(backend: RecordingBackend) -> None:
    async def scenario() -> str:
        async with maintenance_server(backend) as server:
            pin = ":".join(server.spki_sha256[i : i + 2] for i in range(0, 64, 2)).upper()  # console style
            async with _client(server.port, pin=pin) as client:
                return (await client.version()).tag

    assert asyncio.run(scenario()) == "v1.11.6-standin"


def test_spki_pin_mismatch_is_refused_before_sending(backend: RecordingBackend) -> None:
    async def scenario() -> None:
        async with maintenance_server(backend) as server, _client(server.port, pin="ab" * 32) as client:
            await client.apply_configuration(CONFIG_OK)

    with pytest.raises(TalosTLSError, match="does not match the pin") as err:
        asyncio.run(scenario())
    assert "ApplyConfiguration" in str(err.value)
    assert backend.calls == []  # the config never reached the (wrong) server


def test_each_maintenance_start_has_a_fresh_certificate(backend: RecordingBackend) -> None:
    async def pin() -> str:
        async with maintenance_server(backend) as server:
            return server.spki_sha256

    assert asyncio.run(pin()) != asyncio.run(pin())
