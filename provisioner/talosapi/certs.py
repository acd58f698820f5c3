"""Server certificates for apid/trustd: self-signed (maintenance), signed by the OS CA, or from a CSR.

Talos nodes present an Ed25519 server certificate: in maintenance mode a throw-away self-signed one,
once configured one for the node's addresses signed by the OS CA (control planes hold the CA key;
workers send a CSR to a control plane's trustd). The lab's stand-in imports this module, so it uses
cryptography only. Client (talosconfig) certificates are ``provisioner.talos.pki``'s job.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .tls import normalize_key_pem

SERVER_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True)
class ServerCert:
    """A server certificate (PEM) and its private key (plain PKCS#8 PEM; hidden from repr)."""

    crt_pem: bytes
    key_pem: bytes = field(repr=False)


def new_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _sans(addresses: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for addr in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            names.append(x509.DNSName(addr))
    return x509.SubjectAlternativeName(names)


def _server_builder(subject: x509.Name, issuer: x509.Name, public_key: ed25519.Ed25519PublicKey,
                    addresses: Iterable[str]) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew between VMs
        .not_valid_after(now + SERVER_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    addresses = list(addresses)
    if addresses:
        builder = builder.add_extension(_sans(addresses), critical=False)
    return builder


def self_signed(hostname: str, addresses: Iterable[str] = ()) -> ServerCert:
    """Maintenance mode's throw-away certificate: clients skip verification and may pin its SPKI."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname or "maintenance")])
    cert = _server_builder(name, name, key.public_key(), addresses).sign(key, None)
    return ServerCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load_ca(ca_crt_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, ed25519.Ed25519PrivateKey]:
    ca_cert = x509.load_pem_x509_certificate(ca_crt_pem)
    ca_key = serialization.load_pem_private_key(normalize_key_pem(ca_key_pem), password=None)
    if not isinstance(ca_key, ed25519.Ed25519PrivateKey):
        raise ValueError("the OS CA key must be Ed25519, as Talos's is")
    return ca_cert, ca_key


def signed_by_ca(ca_crt_pem: bytes, ca_key_pem: bytes, hostname: str, addresses: Iterable[str]) -> ServerCert:
    """A server certificate for ``addresses`` signed by the OS CA (control planes hold the CA key)."""
    ca_cert, ca_key = _load_ca(ca_crt_pem, ca_key_pem)
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = _server_builder(subject, ca_cert.subject, key.public_key(), addresses).sign(ca_key, None)
    return ServerCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_csr(hostname: str, addresses: Iterable[str]) -> tuple[bytes, bytes]:
    """A CSR (PEM) for a worker's server certificate and the new private key (PEM) behind it."""
    key = new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .add_extension(_sans(addresses), critical=False)
        .sign(key, None)
    )
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def sign_csr(ca_crt_pem: bytes, ca_key_pem: bytes, csr_pem: bytes) -> bytes:
    """trustd's job: sign a node's CSR with the OS CA, keeping only its subject and SANs.

    Raises ValueError for an unreadable CSR or one whose signature does not verify.
    """
    ca_cert, ca_key = _load_ca(ca_crt_pem, ca_key_pem)
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("CSR signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise ValueError("CSR key must be Ed25519")
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        addresses = [str(v) for v in sans.get_values_for_type(x509.IPAddress)] + list(
            sans.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        addresses = []
    cert = _server_builder(csr.subject, ca_cert.subject, public_key, addresses).sign(ca_key, None)
    return cert.public_bytes(serialization.Encoding.PEM)
