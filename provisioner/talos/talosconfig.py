"""The admin ``talosconfig``: who may talk to the Talos API, and how.

Format as ``talosctl`` writes it (``context`` + ``contexts.<name>.{endpoints, ca, crt,
key}``, base64 PEM), so the file works with ``talosctl --talosconfig`` directly. Reading a
talosconfig back lives in ``provisioner.talosapi.talosconfig`` (the client's side); this
module only writes one, so the dependency runs talos -> talosapi. The client
certificate is Ed25519, signed by the OS CA, O=os:admin, ExtKeyUsage ClientAuth only.

A certificate is random and time-stamped, so regenerating it on every run would make the
file differ each time: an existing client certificate is kept while it still chains to the
cluster's OS CA and has more than ``RENEW_BEFORE`` left; only the endpoints are refreshed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import ssl
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import InputError
from ..fsutil import atomic_write
from ..talosapi.talosconfig import load_talosconfig
from ..talosapi.tls import mtls_client_context
from . import pki
from .pki import KeyPair
from .secrets import SecretsBundle

ADMIN_ROLE = "os:admin"
RENEW_BEFORE = dt.timedelta(days=30)


def render_talosconfig(context: str, endpoints: list[str], ca_pem: bytes, client: KeyPair) -> bytes:
    assert client.crt is not None
    doc = {
        "context": context,
        "contexts": {
            context: {
                "endpoints": list(endpoints),
                "ca": pki.b64(ca_pem),
                "crt": pki.b64(client.crt),
                "key": pki.b64(client.key),
            }
        },
    }
    return yaml.dump(doc, Dumper=yaml.SafeDumper, sort_keys=False, indent=4, width=1 << 16).encode()


def client_ssl_context(ca_pem: bytes, crt_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A mutual-TLS client context for apid: the Talos API client's own (one definition of it)."""
    return mtls_client_context(ca_pem, crt_pem, key_pem)


def _reusable_client(path: Path, os_ca: KeyPair) -> KeyPair | None:
    """The existing admin cert and key, if still valid for this OS CA; None otherwise."""
    if not path.exists():
        return None
    try:
        _, ca_pem, crt_pem, key_pem = load_talosconfig(path)
        cert = x509.load_pem_x509_certificate(crt_pem)
        key = pki.load_private_key(key_pem)
        assert os_ca.crt is not None
        ca_cert = x509.load_pem_x509_certificate(os_ca.crt)
        ca_public = ca_cert.public_key()
        if not isinstance(ca_public, ed25519.Ed25519PublicKey) or ca_pem != os_ca.crt:
            return None
        ca_public.verify(cert.signature, cert.tbs_certificate_bytes)
        if pki.public_der(cert.public_key()) != pki.public_der(key.public_key()):
            return None
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
        if orgs != [ADMIN_ROLE]:
            return None
        if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
            return None
    except (InputError, ValueError, InvalidSignature, AssertionError):
        return None
    return KeyPair(crt_pem, key_pem)


def write_talosconfig(path: Path, context: str, endpoints: list[str], secrets: SecretsBundle) -> bool:
    """Write (0600, atomically) the admin talosconfig; True if the file changed."""
    assert secrets.os.crt is not None
    client = _reusable_client(path, secrets.os) or pki.new_client_cert(secrets.os, ADMIN_ROLE)
    data = render_talosconfig(context, endpoints, secrets.os.crt, client)
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            os.chmod(path, 0o600)
            return False
    atomic_write(path, data, mode=0o600)
    return True
