"""trustd stand-in: a worker (no OS CA key) gets its apid server certificate from a control plane."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from provisioner.lab.standin import apid
from provisioner.talos import pki
from provisioner.talosapi import certs
from provisioner.talosapi.client import TalosClient

from .conftest import FAST_RETRY, RecordingBackend, write_talosconfig

pytestmark = pytest.mark.timeout(60)
TOKEN = "abcdef.0123456789abcdef"


def test_worker_gets_a_cert_from_trustd_and_serves_mutual_tls(tmp_path: Path, os_ca: pki.KeyPair) -> None:
    assert os_ca.crt is not None
    backend = RecordingBackend()
    cfg = write_talosconfig(tmp_path / "tc", os_ca, pki.new_client_cert(os_ca, "os:admin"), ["127.0.0.1"])

    async def scenario() -> tuple[bytes, str]:
        assert os_ca.crt is not None
        trustd = await apid.serve_trustd("127.0.0.1", 0, os_ca.crt, os_ca.key, TOKEN, ["127.0.0.1"])
        try:
            server_cert = await apid.fetch_server_cert(
                ["127.0.0.1"], os_ca.crt, TOKEN, "worker1", ["127.0.0.1"], port=trustd.port, deadline=10
            )
        finally:
            await trustd.stop()
        worker = await apid.serve_configured(
            "127.0.0.1", 0, backend, os_ca.crt, None, ["127.0.0.1"], server_cert=server_cert
        )
        try:
            client = TalosClient.from_talosconfig(cfg, port=worker.port, timeout=5, retry=FAST_RETRY)
            async with client:
                return server_cert.crt_pem, (await client.version()).tag
        finally:
            await worker.stop()

    crt_pem, tag = asyncio.run(scenario())
    assert tag == "v1.11.6-standin"
    cert = x509.load_pem_x509_certificate(crt_pem)
    ca = x509.load_pem_x509_certificate(os_ca.crt)
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_trustd_refuses_a_wrong_token(os_ca: pki.KeyPair) -> None:
    async def scenario() -> None:
        assert os_ca.crt is not None
        trustd = await apid.serve_trustd("127.0.0.1", 0, os_ca.crt, os_ca.key, TOKEN, ["127.0.0.1"])
        try:
            csr, _key = certs.make_csr("worker1", ["127.0.0.1"])
            await apid.request_certificate(
                "127.0.0.1", trustd.port, os_ca.crt, "zzzzzz.0123456789abcdef", csr
            )
        finally:
            await trustd.stop()

    with pytest.raises(GRPCError) as err:
        asyncio.run(scenario())
    assert err.value.status is Status.UNAUTHENTICATED


def test_worker_without_ca_key_or_cert_is_a_usage_error(os_ca: pki.KeyPair) -> None:
    async def scenario() -> None:
        assert os_ca.crt is not None
        await apid.serve_configured("127.0.0.1", 0, RecordingBackend(), os_ca.crt, None, ["127.0.0.1"])

    with pytest.raises(ValueError, match="trustd"):
        asyncio.run(scenario())


def test_fetch_gives_up_when_no_trustd_answers(os_ca: pki.KeyPair) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])

    async def scenario() -> None:
        assert os_ca.crt is not None
        await apid.fetch_server_cert(
            ["127.0.0.1"], os_ca.crt, TOKEN, "w", ["127.0.0.1"], port=port, deadline=0.3, interval=0.1
        )

    with pytest.raises(TimeoutError, match="no trustd answered"):
        asyncio.run(scenario())
