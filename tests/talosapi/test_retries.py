"""Retry and timeout behaviour: only "not answering (yet)" is retried, a bounded number of times."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from provisioner.lab.standin.backend import NotReady, PreconditionFailed
from provisioner.talos import pki
from provisioner.talosapi.client import RetryPolicy, TalosClient, run
from provisioner.talosapi.errors import TalosRefused, TalosUnavailable

from .conftest import FAST_RETRY, RecordingBackend, configured_server, maintenance_server, write_talosconfig

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def admin_cfg(tmp_path: Path, os_ca: pki.KeyPair) -> Path:
    return write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:admin"), ["127.0.0.1"])


def test_unavailable_is_retried_until_it_answers(backend: RecordingBackend) -> None:
    backend.fail["version"] = [NotReady("apid starting"), NotReady("apid starting")]

    async def scenario() -> str:
        async with maintenance_server(backend) as server:
            client = TalosClient.maintenance("127.0.0.1", port=server.port, timeout=5, retry=FAST_RETRY)
            async with client:
                return (await client.version()).tag

    assert asyncio.run(scenario()) == "v1.11.6-standin"
    assert len(backend.calls_to("version")) == 3


def test_unavailable_gives_up_after_the_bounded_attempts(backend: RecordingBackend) -> None:
    backend.fail["version"] = [NotReady("apid starting")] * 10

    async def scenario() -> None:
        async with maintenance_server(backend) as server:
            client = TalosClient.maintenance("127.0.0.1", port=server.port, timeout=5, retry=FAST_RETRY)
            async with client:
                await client.version()

    with pytest.raises(TalosUnavailable) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "UNAVAILABLE"
    assert "after 3 attempts" in str(err.value) and "apid starting" in str(err.value)
    assert len(backend.calls_to("version")) == FAST_RETRY.attempts


def test_refusals_are_not_retried(admin_cfg: Path, os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()
    backend.fail["bootstrap"] = [PreconditionFailed("this node is a worker")]

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server:
            client = TalosClient.from_talosconfig(admin_cfg, port=server.port, timeout=5, retry=FAST_RETRY)
            async with client:
                await client.bootstrap()

    with pytest.raises(TalosRefused) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "FAILED_PRECONDITION"
    assert "this node is a worker" in str(err.value)
    assert len(backend.calls_to("bootstrap")) == 1


def test_kubeconfig_before_bootstrap_is_retried_then_reported(admin_cfg: Path, os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()  # not bootstrapped: the backend answers NotReady (UNAVAILABLE)

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server:
            client = TalosClient.from_talosconfig(admin_cfg, port=server.port, timeout=5, retry=FAST_RETRY)
            async with client:
                await client.kubeconfig()

    with pytest.raises(TalosUnavailable, match="not available before bootstrap"):
        asyncio.run(scenario())
    assert len(backend.calls_to("kubeconfig")) == FAST_RETRY.attempts


def test_slow_answer_times_out_and_is_retried(admin_cfg: Path, os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()
    backend.delay["services"] = 3.0
    policy = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02, jitter=0.01)

    async def scenario() -> None:
        async with configured_server(backend, os_ca) as server:
            client = TalosClient.from_talosconfig(admin_cfg, port=server.port, timeout=0.3, retry=policy)
            async with client:
                await client.service_list()

    with pytest.raises(TalosUnavailable) as err:
        asyncio.run(scenario())
    assert err.value.grpc_status == "DEADLINE_EXCEEDED"
    assert "ServiceList" in str(err.value) and "after 2 attempts" in str(err.value)
    assert len(backend.calls_to("services")) == 2


def test_per_call_timeout_overrides_the_default(admin_cfg: Path, os_ca: pki.KeyPair) -> None:
    backend = RecordingBackend()
    backend.delay["services"] = 0.5
    policy = RetryPolicy(attempts=1)

    async def scenario() -> int:
        async with configured_server(backend, os_ca) as server:
            client = TalosClient.from_talosconfig(admin_cfg, port=server.port, timeout=0.1, retry=policy)
            async with client:
                return len(await client.service_list(timeout=5))

    assert asyncio.run(scenario()) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_and_names_the_node() -> None:
    client = TalosClient.maintenance(
        "127.0.0.1", port=_closed_port(), node="cp9", timeout=2, retry=FAST_RETRY
    )

    with pytest.raises(TalosUnavailable) as err:
        run(client.version())
    message = str(err.value)
    assert "node cp9" in message and "Version" in message and "after 3 attempts" in message
    assert "cannot reach the node" in message


def test_sync_run_helper_returns_the_result(backend: RecordingBackend) -> None:
    async def scenario() -> str:
        async with maintenance_server(backend) as server:
            client = TalosClient.maintenance("127.0.0.1", port=server.port, timeout=5, retry=FAST_RETRY)
            async with client:
                return (await client.version()).platform_name

    assert run(scenario()) == "metal"
