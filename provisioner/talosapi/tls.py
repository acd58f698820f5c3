"""TLS material for the Talos machine API: SSL contexts, PEM quirks, SPKI pins, talosconfig parsing.

Talos uses Ed25519 everywhere. grpcio cannot handshake with Ed25519 certificates, so both the client and
the lab's stand-in server run grpclib over Python's ``ssl``, which needs two adjustments done here:
Talos writes Ed25519 keys with the PEM label ``ED25519 PRIVATE KEY`` (PKCS#8 inside) that OpenSSL only
loads as ``PRIVATE KEY``, and ``ssl`` only loads keys from files, so key material goes through an
anonymous in-memory file (memfd) instead of touching the disk.

Standard library + cryptography only: the stand-in image imports this module. Reading a talosconfig
file is ``provisioner.talos.talosconfig``'s job.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

ALPN = ["h2"]


def normalize_key_pem(pem: bytes) -> bytes:
    """Rewrite Talos's ``ED25519 PRIVATE KEY`` label to ``PRIVATE KEY`` (same PKCS#8 bytes inside)."""
    # Both the BEGIN and the END line end with this label.
    return pem.replace(b" ED25519 PRIVATE KEY-----", b" PRIVATE KEY-----")


def spki_sha256(cert: bytes) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo (PEM or DER): the maintenance-mode pin.

    Pinning the public key rather than the whole certificate survives re-issuing the certificate for
    the same key, and is what the node prints on its console.
    """
    parsed = x509.load_pem_x509_certificate(cert) if cert.lstrip().startswith(b"-----") else (
        x509.load_der_x509_certificate(cert)
    )
    spki = parsed.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def normalize_pin(pin: str) -> str:
    """Accept a SHA-256 pin as hex (with or without colons) or base64; return lowercase hex.

    Raises ValueError with a message that names the problem (the pin is not secret).
    """
    text = pin.strip().replace(":", "").lower()
    if len(text) == 64:
        try:
            bytes.fromhex(text)
            return text
        except ValueError:
            pass
    try:
        raw = base64.b64decode(pin.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        return raw.hex()
    raise ValueError(f"certificate pin {pin!r} is not a SHA-256 digest (64 hex digits or base64 of 32 bytes)")


@contextlib.contextmanager
def _secret_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` that ``ssl`` can read: a memfd (never on disk), else a 0600 temp file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("talos-tls", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="talos-tls-")  # mkstemp creates mode 0600
    try:
        os.write(fd, data)
        os.close(fd)
        yield path
    finally:
        os.unlink(path)


def load_cert_chain(ctx: ssl.SSLContext, crt_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and its (possibly Talos-labelled) private key into ``ctx`` without disk files."""
    with _secret_file(crt_pem + b"\n" + normalize_key_pem(key_pem)) as path:
        ctx.load_cert_chain(path)


def _base_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    client = purpose is ssl.Purpose.SERVER_AUTH
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if client else ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    return ctx


def maintenance_client_context() -> ssl.SSLContext:
    """Client side of maintenance mode: no client certificate and no chain verification.

    The node's certificate is self-signed and unknown in advance; the caller pins its SPKI instead
    (see ``spki_sha256``) when the operator has the fingerprint from the console.
    """
    ctx = _base_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def mtls_client_context(ca_pem: bytes, crt_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """Client side of the configured node: verify the server against the OS CA, present the client cert.

    Hostname checking stays on: Talos server certificates carry the node's IP addresses as SANs.
    """
    ctx = _base_context(ssl.Purpose.SERVER_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    load_cert_chain(ctx, crt_pem, key_pem)
    return ctx


def server_context(crt_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None) -> ssl.SSLContext:
    """Server side: present ``crt_pem``; with ``client_ca_pem`` require a client cert signed by it."""
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH)
    load_cert_chain(ctx, crt_pem, key_pem)
    if client_ca_pem is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    return ctx


@dataclass(frozen=True)
class ClientCredentials:
    """What a talosconfig context holds: endpoints and PEM material (key never printed: repr hides it)."""

    endpoints: tuple[str, ...]
    ca_pem: bytes
    crt_pem: bytes
    key_pem: bytes = field(repr=False)
