"""The admin kubeconfig a control plane hands out (Kubeconfig RPC), as Talos generates it.

Talos signs a fresh client certificate (CN=admin, O=system:masters, ClientAuth, one year) with the
cluster's Kubernetes CA from the machine config and points the kubeconfig at
``cluster.controlPlane.endpoint``; names are ``<cluster>`` and ``admin@<cluster>``. Written as
YAML by hand: the layout is fixed and the image should not need a YAML emitter for it.

Imports cryptography lazily (called once per RPC, never at boot).
"""

from __future__ import annotations

import base64
import datetime as dt

CERT_LIFETIME = dt.timedelta(days=365)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def admin_client_cert(
    ca_crt_pem: bytes, ca_key_pem: bytes, lifetime: dt.timedelta = CERT_LIFETIME
) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for ``admin`` in ``system:masters``, signed by the Kubernetes CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_crt_pem)
    ca_key = serialization.load_pem_private_key(
        ca_key_pem.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY"), password=None
    )
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported Kubernetes CA key type {type(ca_key).__name__}")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # noqa: UP017 - also runs on older hosts
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                ]
            )
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def admin_kubeconfig(cluster_name: str, endpoint: str, ca_crt_pem: bytes, ca_key_pem: bytes) -> bytes:
    """kubeconfig YAML for the cluster admin (client cert chained to the Kubernetes CA)."""
    crt, key = admin_client_cert(ca_crt_pem, ca_key_pem)
    user = f"admin@{cluster_name}"
    text = (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: {cluster_name}\n"
        "  cluster:\n"
        f"    server: {endpoint}\n"
        f"    certificate-authority-data: {_b64(ca_crt_pem)}\n"
        "users:\n"
        f"- name: {user}\n"
        "  user:\n"
        f"    client-certificate-data: {_b64(crt)}\n"
        f"    client-key-data: {_b64(key)}\n"
        "contexts:\n"
        f"- name: {user}\n"
        "  context:\n"
        f"    cluster: {cluster_name}\n"
        "    namespace: default\n"
        f"    user: {user}\n"
        f"current-context: {user}\n"
    )
    return text.encode()
