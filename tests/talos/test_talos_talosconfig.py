"""The admin talosconfig: certificate properties, stability, and a real mutual-TLS
handshake on 127.0.0.1 against a server whose Ed25519 cert is signed by the OS CA (the
way apid is set up)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioner.talos import pki
from provisioner.talos.configs import generate_configs
from provisioner.talos.secrets import SecretsBundle
from provisioner.talos.talosconfig import client_ssl_context, load_talosconfig


def test_talosconfig_format_and_admin_certificate(make_site, bundle: SecretsBundle) -> None:
    site = make_site()
    generate_configs(site)
    path = site.state_dir / "talosconfig"
    assert path.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["context"] == "lab"
    assert set(doc["contexts"]["lab"]) == {"endpoints", "ca", "crt", "key"}
    endpoints, ca, crt, key = load_talosconfig(path)
    assert endpoints == ["192.168.77.11", "192.168.77.12", "192.168.77.13"]  # control planes, not the worker
    assert ca == bundle.os.crt
    assert key.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(crt)
    ca_cert = x509.load_pem_x509_certificate(ca)
    # chains to the OS CA
    assert cert.issuer == ca_cert.subject
    ca_public = ca_cert.public_key()
    assert isinstance(ca_public, ed25519.Ed25519PublicKey)
    ca_public.verify(cert.signature, cert.tbs_certificate_bytes)
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    assert pki.public_der(cert.public_key()) == pki.public_der(pki.load_private_key(key).public_key())
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["os:admin"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=8760)


def test_client_cert_is_kept_while_valid_and_replaced_for_another_ca(make_site, tmp_path: Path) -> None:
    site = make_site()
    generate_configs(site)
    path = site.state_dir / "talosconfig"
    first = path.read_bytes()
    generate_configs(site)
    assert path.read_bytes() == first
    # a talosconfig signed by some other CA is not reused
    other = pki.new_ca("talos", "ed25519")
    doc = yaml.safe_load(first)
    client = pki.new_client_cert(other, "os:admin")
    doc["contexts"]["lab"]["crt"] = pki.b64(client.crt or b"")
    doc["contexts"]["lab"]["key"] = pki.b64(client.key)
    path.write_text(yaml.safe_dump(doc))
    generate_configs(site)
    _, ca, crt, _ = load_talosconfig(path)
    ca_public = x509.load_pem_x509_certificate(ca).public_key()
    cert = x509.load_pem_x509_certificate(crt)
    ca_public.verify(cert.signature, cert.tbs_certificate_bytes)  # type: ignore[union-attr]
    assert crt != client.crt


def _server_cert(os_ca: pki.KeyPair, tmp_path: Path) -> tuple[Path, Path]:
    """An apid-like server certificate for 127.0.0.1, Ed25519, signed by the OS CA."""
    import ipaddress

    ca_cert = x509.load_pem_x509_certificate(os_ca.crt or b"")
    ca_key = pki.load_private_key(os_ca.key)
    key = ed25519.Ed25519PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apid")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, None)
    )
    crt_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    crt_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return crt_file, key_file


def test_mutual_tls_handshake_with_the_talosconfig(make_site, bundle: SecretsBundle, tmp_path: Path) -> None:
    site = make_site()
    generate_configs(site)
    _, ca, crt, key = load_talosconfig(site.state_dir / "talosconfig")
    crt_file, key_file = _server_cert(bundle.os, tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt_file, key_file)
    server_ctx.load_verify_locations(cadata=ca.decode())
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.set_alpn_protocols(["h2"])
    seen: dict[str, object] = {}

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                seen["subject"] = peer["subject"] if peer else None
                seen["alpn"] = tls.selected_alpn_protocol()
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client_ctx = client_ssl_context(ca, crt, key)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(2) == b"ok"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        thread.join(timeout=10)
    assert seen["alpn"] == "h2"
    assert seen["subject"] == ((("organizationName", "os:admin"),),)
