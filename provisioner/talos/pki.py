"""Keys and certificates in the shapes Talos and ``talosctl`` use.

Talos stores every key and certificate as base64 of PEM text, and its PEM labels follow
Go's conventions (``EC PRIVATE KEY`` for SEC1, ``RSA PRIVATE KEY`` for PKCS#1, and the
non-standard ``ED25519 PRIVATE KEY`` around PKCS#8 bytes). Matching them byte for byte is
what lets an operator move the files between this tool and ``talosctl``.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets as _random
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

CA_LIFETIME = dt.timedelta(hours=87600)  # 10 years, as talosctl
CLIENT_LIFETIME = dt.timedelta(hours=8760)  # 1 year, as talosctl's admin talosconfig

_ED25519_LABEL = b"ED25519 PRIVATE KEY"


@dataclass(frozen=True)
class KeyPair:
    """A certificate (may be absent for bare keys) and its private key, both as PEM bytes."""

    crt: bytes | None
    key: bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def key_to_pem(key: PrivateKey) -> bytes:
    """PEM with Go's labels: SEC1 for ECDSA, PKCS#1 for RSA, ``ED25519 PRIVATE KEY`` PKCS#8."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return pem.replace(b"PRIVATE KEY", _ED25519_LABEL)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def pem_for_python_ssl(key_pem: bytes) -> bytes:
    """Python's ``ssl`` (OpenSSL) does not know the ``ED25519 PRIVATE KEY`` label; the bytes
    inside are plain PKCS#8, so only the label needs rewriting (one definition, in the API's TLS module)."""
    from ..talosapi.tls import normalize_key_pem

    return normalize_key_pem(key_pem)


def load_private_key(key_pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem_for_python_ssl(key_pem), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(organization: str | None) -> x509.Name:
    if organization is None:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])


def _signing_hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def new_ca(organization: str | None, kind: str) -> KeyPair:
    """A self-signed CA like Talos's: 10 years, CertSign|DigitalSignature, subject only O=.

    ``kind`` is ``ecdsa`` (P-256) or ``ed25519``. ``organization=None`` gives the empty
    subject Talos uses for the aggregator CA.
    """
    new_ed25519 = ed25519.Ed25519PrivateKey.generate
    key: PrivateKey = ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa" else new_ed25519()
    now = _now()
    name = _name(organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _signing_hash(key))
    )
    return KeyPair(cert_to_pem(cert), key_to_pem(key))


def new_rsa_key(bits: int = 4096) -> bytes:
    """The Kubernetes service-account signing key (PKCS#1 PEM)."""
    return key_to_pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def new_client_cert(ca: KeyPair, organization: str, lifetime: dt.timedelta = CLIENT_LIFETIME) -> KeyPair:
    """An Ed25519 client certificate for the Talos API: O=role, DigitalSignature,
    ExtKeyUsage ClientAuth only (apid rejects anything else with apidCheckExtKeyUsage)."""
    assert ca.crt is not None
    ca_cert = x509.load_pem_x509_certificate(ca.crt)
    ca_key = load_private_key(ca.key)
    key = ed25519.Ed25519PrivateKey.generate()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, _signing_hash(ca_key))
    )
    return KeyPair(cert_to_pem(cert), key_to_pem(key))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def random_token() -> str:
    """A Kubernetes-style bootstrap token: ``[0-9a-z]{6}.[0-9a-z]{16}``."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    pick = _random.choice
    return "".join(pick(alphabet) for _ in range(6)) + "." + "".join(pick(alphabet) for _ in range(16))


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate: public, safe to print, identifies a CA in summaries."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def public_der(public_key: object) -> bytes:
    """SubjectPublicKeyInfo DER of any public key: compares a certificate with a key."""
    return bytes(public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
