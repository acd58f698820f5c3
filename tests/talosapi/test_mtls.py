"""Configured mode: mutual TLS against the OS CA, roles from the client certificate, every RPC."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from provisioner.talos import pki
from provisioner.talosapi.client import ApplyMode, TalosClient, WipeMode
from provisioner.talosapi.errors import TalosApiError, TalosRefused, TalosTLSError, TalosUnavailable

from .conftest import CONFIG_OK, FAST_RETRY, RecordingBackend, configured_server, write_talosconfig

pytestmark = pytest.mark.timeout(60)


def _client(talosconfig: Path, port: int, **kwargs: object) -> TalosClient:
    return TalosClient.from_talosconfig(
        talosconfig, port=port, node="cp1", timeout=5, retry=FAST_RETRY, **kwargs
    )


def test_admin_from_talosconfig_can_do_everything(tmp_path: Path, os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()
    cfg = write_talosconfig(
        tmp_path / "talosconfig", os_ca, pki.new_client_cert(os_ca, "os:admin"), ["127.0.0.1"]
    )

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            version = await client.version()
            assert (version.tag, version.hostname, version.platform_mode) == (
                "v1.11.6-standin",
                "cp1",
                "metal",
            )
            services = await client.service_list()
            assert [(s.id, s.state, s.healthy) for s in services] == [
                ("apid", "Running", True),
                ("etcd", "Preparing", False),
            ]
            assert services[1].last_message == "waiting for bootstrap"
            await client.bootstrap()
            members = await client.etcd_member_list(query_local=True)
            assert [(m.id, m.hostname, m.is_learner) for m in members] == [
                (0xFFFF_FFFF_FFFF_FF01, "cp1", False),  # a full uint64 survives the wire
                (7, "cp2", True),
            ]
            assert members[0].peer_urls == ("https://10.0.0.11:2380",)
            result = await client.apply_configuration(CONFIG_OK, mode=ApplyMode.NO_REBOOT)
            assert result.mode is ApplyMode.NO_REBOOT
            await client.reset(graceful=False, reboot=True, wipe_mode=WipeMode.SYSTEM_DISK)

    asyncio.run(scenario())
    assert backend.calls_to("bootstrap") == [(False,)]
    assert backend.calls_to("reset") == [(False, True, WipeMode.SYSTEM_DISK)]
    assert backend.calls_to("apply_config") == [(CONFIG_OK, ApplyMode.NO_REBOOT, False)]


def test_second_bootstrap_is_refused_with_already_exists(tmp_path: Path, os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()
    cfg = write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:admin"), ["127.0.0.1"])

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            await client.bootstrap()
            await client.bootstrap()

    with pytest.raises(TalosRefused) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "ALREADY_EXISTS"
    assert len(backend.calls_to("bootstrap")) == 2  # refusals are not retried


def test_client_cert_from_another_ca_is_refused(
    tmp_path: Path, os_ca: pki.KeyPair, other_ca: pki.KeyPair
) -> None:
    backend = RecordingBackend()
    # Trusts the right server CA, but presents a client cert signed by a CA the node does not know.
    foreign = pki.new_client_cert(other_ca, "os:admin")
    cfg = write_talosconfig(tmp_path / "tc", os_ca, foreign, ["127.0.0.1"])

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            await client.version()

    with pytest.raises(TalosTLSError, match="refused the client certificate") as err:
        asyncio.run(scenario())
    message = str(err.value)
    assert "Version" in message and "127.0.0.1" in message
    assert backend.calls == []


def test_server_from_another_ca_is_not_trusted(
    tmp_path: Path, os_ca: pki.KeyPair, other_ca: pki.KeyPair
) -> None:
    backend = RecordingBackend()
    assert other_ca.crt is not None
    cfg = tmp_path / "tc"
    # The client trusts other_ca only; the node's server cert is from os_ca.
    from provisioner.talos.talosconfig import render_talosconfig

    cfg.write_bytes(
        render_talosconfig("lab", ["127.0.0.1"], other_ca.crt, pki.new_client_cert(other_ca, "os:admin"))
    )

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            await client.version()

    with pytest.raises(TalosTLSError, match="TLS handshake failed") as err:
        asyncio.run(scenario())
    assert "127.0.0.1" in str(err.value)
    assert backend.calls == []


def test_maintenance_client_cannot_talk_to_a_configured_node(os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server:
            client = TalosClient.maintenance("127.0.0.1", port=server.port, timeout=5, retry=FAST_RETRY)
            async with client:
                await client.version()

    with pytest.raises((TalosTLSError, TalosUnavailable)):
        asyncio.run(scenario())
    assert backend.calls == []


def test_reader_may_read_but_not_bootstrap(tmp_path: Path, os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()
    cfg = write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:reader"), ["127.0.0.1"])

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            assert (await client.version()).tag.endswith("-standin")
            assert len(await client.etcd_member_list()) == 2
            assert len(await client.service_list()) == 2
            await client.bootstrap()

    with pytest.raises(TalosRefused) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "PERMISSION_DENIED"
    assert "os:reader" in str(err.value) and "Bootstrap" in str(err.value)
    assert backend.calls_to("bootstrap") == []


@pytest.mark.parametrize("rpc", ["kubeconfig", "reset", "apply"])
def test_reader_is_denied_every_mutating_or_secret_rpc(tmp_path: Path, os_ca: pki.KeyPair, rpc: str) -> None:
    backend = RecordingBackend()
    backend.bootstrapped = True
    cfg = write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:reader"), ["127.0.0.1"])

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            if rpc == "kubeconfig":
                await client.kubeconfig()
            elif rpc == "reset":
                await client.reset()
            else:
                await client.apply_configuration(CONFIG_OK)

    with pytest.raises(TalosRefused) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "PERMISSION_DENIED"
    assert backend.calls == []


def test_kubeconfig_is_unpacked_from_the_chunked_targz(tmp_path: Path, os_ca: pki.KeyPair) -> None:
    # Larger than one 16 KiB chunk, and not compressible to one: several common.Data messages.
    import secrets

    kubeconfig = b"apiVersion: v1\nkind: Config\n# " + secrets.token_hex(40_000).encode() + b"\n"
    backend = RecordingBackend(kubeconfig=kubeconfig)
    backend.bootstrapped = True
    cfg = write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:admin"), ["127.0.0.1"])

    async def scenario() -> bytes:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            return await client.kubeconfig()

    assert asyncio.run(scenario()) == kubeconfig


def test_a_connection_holds_a_64_kib_receive_buffer_and_still_carries_a_large_answer(
    tmp_path: Path, os_ca: pki.KeyPair
) -> None:
    # asyncio's default is 256 KiB per TLS connection, all of it resident (client.py); a 1 MiB
    # answer, 16 times the buffer, is drained from OpenSSL a buffer at a time and arrives whole.
    import secrets

    kubeconfig = b"apiVersion: v1\nkind: Config\n# " + secrets.token_hex(512 * 1024).encode() + b"\n"
    backend = RecordingBackend(kubeconfig=kubeconfig)
    backend.bootstrapped = True
    cfg = write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:admin"), ["127.0.0.1"])
    buffers: list[int] = []

    async def scenario() -> bytes:
        async with configured_server(backend, os_ca) as server, _client(cfg, server.port) as client:
            got = await client.kubeconfig()
            channel = client._channel
            assert channel is not None and channel.last_protocol is not None
            # asyncio's own (private) SSLProtocol behind the transport the channel connected with
            buffers.append(len(channel.last_protocol.transport._ssl_protocol._ssl_buffer))
            return got

    assert asyncio.run(scenario()) == kubeconfig
    assert buffers == [64 * 1024]


def test_talosconfig_without_endpoints_needs_an_explicit_one(tmp_path: Path, os_ca: pki.KeyPair) -> None:
    from provisioner.errors import InputError

    cfg = write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:admin"), [])
    with pytest.raises(InputError, match="no endpoints"):
        TalosClient.from_talosconfig(cfg)
    assert TalosClient.from_talosconfig(cfg, "127.0.0.1").endpoint == "127.0.0.1"


def test_errors_are_talos_api_errors_with_exit_code_1(tmp_path: Path, os_ca: pki.KeyPair) -> None:
    assert issubclass(TalosRefused, TalosApiError) and TalosRefused("a", "b", "c").exit_code == 1
