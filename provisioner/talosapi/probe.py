"""Ask a machine's Talos API port which mode it is in, without any credentials.

Why: a run that has no secrets yet must not create new ones for a site that is already installed
(a new CA would make every installed node look blank and be reinstalled). The one thing that tells
an installed Talos node from a new one without its secrets is how its API (:50000) answers TLS:

- maintenance mode serves server-only TLS (a throw-away certificate: self-signed, or issued by a
  throw-away maintenance CA), so an HTTP/2 client preface without a client certificate is answered;
- an installed node serves mutual TLS: its certificate is issued by the cluster's OS CA, its handshake
  asks for a client certificate (a CertificateRequest message, seen through OpenSSL's message
  callback), and a client without one is refused right after the handshake (Go's TLS sends a
  ``certificate required`` alert, TLS 1.3, or ``bad certificate``, TLS 1.2; Python's asyncio
  servers, like the lab's stand-in, just close);
- anything else (refused, silent, not TLS) is not a Talos node we could reinstall by accident.

Standard library + cryptography only; no gRPC call is made.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

TALOS_API_PORT = 50000
# The HTTP/2 connection preface and an empty SETTINGS frame: what a gRPC client sends first.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# Alerts a server sends a client that presented no certificate where one is required.
CLIENT_CERT_REQUIRED = ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE")

Mode = Literal["installed", "maintenance", "unreachable", "other"]


@dataclass(frozen=True)
class ApiAnswer:
    """How one address answered on the Talos API port."""

    address: str
    port: int
    mode: Mode
    issuer: str | None = None  # the server certificate's issuer (RFC 4514), when one was presented
    detail: str = ""

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


def _issuer(der: bytes | None) -> str | None:
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    name = cert.issuer.rfc4514_string() or "(empty issuer name)"
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    return f"{name}, key id {aki.hex(':')}" if aki else name


def _refuses_anonymous(exc: ssl.SSLError) -> bool:
    return any(reason in str(exc) for reason in CLIENT_CERT_REQUIRED)


def _context(seen: list[int]) -> ssl.SSLContext:
    """A client context that trusts nothing and notes the handshake message types it receives."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we only look at the certificate; nothing is sent but a preface
    ctx.set_alpn_protocols(["h2"])

    def note(
        conn: object, direction: str, version: object, content_type: object, msg_type: object, data: bytes
    ) -> None:
        if direction == "read" and content_type == ssl._TLSContentType.HANDSHAKE:  # type: ignore[attr-defined]
            seen.append(int(msg_type))  # type: ignore[call-overload]

    if hasattr(ctx, "_msg_callback"):  # CPython's debug hook; without it, the refusal alone decides
        ctx._msg_callback = note  # type: ignore[attr-defined]
    return ctx


CERTIFICATE_REQUEST = 13  # TLS handshake message type (RFC 8446 section 4)


def probe(address: str, port: int = TALOS_API_PORT, timeout: float = 1.5) -> ApiAnswer:
    """The mode of the Talos API at ``address:port``; ``timeout`` bounds each network step."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        return ApiAnswer(address, port, "unreachable", detail=exc.strerror or type(exc).__name__)
    seen: list[int] = []
    issuer: str | None = None
    mode: Mode
    with sock:
        sock.settimeout(timeout)
        try:
            with _context(seen).wrap_socket(sock) as tls:
                issuer = _issuer(tls.getpeercert(binary_form=True))
                tls.sendall(H2_PREFACE)
                answered = tls.recv(1)
            if answered:
                mode, detail = "maintenance", "serves without a client certificate"
            else:
                mode, detail = "other", "closed the connection"
        except ssl.SSLError as exc:
            mode, detail = ("installed", "") if _refuses_anonymous(exc) else ("other", f"TLS failed: {exc}")
        except OSError as exc:
            mode, detail = ("other", str(exc) or type(exc).__name__)
    if mode == "installed" or CERTIFICATE_REQUEST in seen:
        return ApiAnswer(address, port, "installed", issuer, "requires a client certificate")
    return ApiAnswer(address, port, mode, issuer, detail)


def probe_all(
    addresses: Iterable[str], port: int = TALOS_API_PORT, timeout: float = 1.5, concurrency: int = 32
) -> list[ApiAnswer]:
    """``probe`` every address, ``concurrency`` at a time (threads: each waits on the network)."""
    todo = list(addresses)
    if not todo:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo)))) as pool:
        return list(pool.map(lambda a: probe(a, port, timeout), todo))
