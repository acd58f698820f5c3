"""The secrets bundle: talosctl's format and algorithms, generated once, importable."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from provisioner.errors import InputError
from provisioner.talos import pki
from provisioner.talos.secrets import (
    SecretsBundle,
    ensure_secrets,
    import_secrets,
    load_secrets,
    parse_secrets,
)


def _cert(pem: bytes | None) -> x509.Certificate:
    assert pem is not None
    return x509.load_pem_x509_certificate(pem)


def _orgs(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


@pytest.mark.parametrize(
    ("attr", "org", "key_type"),
    [
        ("etcd", ["etcd"], ec.EllipticCurvePrivateKey),
        ("k8s", ["kubernetes"], ec.EllipticCurvePrivateKey),
        ("k8s_aggregator", [], ec.EllipticCurvePrivateKey),
        ("os", ["talos"], ed25519.Ed25519PrivateKey),
    ],
)
def test_ca_algorithms_subjects_lifetimes_and_usages(bundle: SecretsBundle, attr: str, org: list[str],
                                                     key_type: type) -> None:
    pair = getattr(bundle, attr)
    cert = _cert(pair.crt)
    key = pki.load_private_key(pair.key)
    assert isinstance(key, key_type)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert key.curve.name == "secp256r1"
        assert pair.key.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    else:
        assert pair.key.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    assert pki.public_der(cert.public_key()) == pki.public_der(key.public_key())
    # the subject holds only the Organization (empty for the aggregator CA), self-issued
    assert _orgs(cert) == org
    assert len(cert.subject) == len(org)
    assert cert.issuer == cert.subject
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(hours=87600)
    assert abs(cert.not_valid_before_utc - dt.datetime.now(dt.UTC)) < dt.timedelta(hours=2)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.digital_signature
    assert not (ku.key_encipherment or ku.crl_sign or ku.content_commitment)


def test_service_account_key_is_rsa4096_pkcs1(bundle: SecretsBundle) -> None:
    pem = bundle.k8s_service_account.key
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    key = pki.load_private_key(pem)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 4096
    assert bundle.k8s_service_account.crt is None


def test_tokens_and_random_secrets_have_talosctl_shapes(bundle: SecretsBundle) -> None:
    token = re.compile(r"^[0-9a-z]{6}\.[0-9a-z]{16}$")
    assert token.match(bundle.bootstrap_token)
    assert token.match(bundle.trustd_token)
    assert bundle.bootstrap_token != bundle.trustd_token
    assert len(base64.urlsafe_b64decode(bundle.cluster_id)) == 32
    assert bundle.cluster_id.endswith("=")  # URL-safe base64 *with* padding
    assert len(base64.b64decode(bundle.cluster_secret, validate=True)) == 32
    assert len(base64.b64decode(bundle.secretbox_encryption_secret, validate=True)) == 32


def test_file_layout_is_talosctl_gen_secrets(bundle: SecretsBundle) -> None:
    doc = yaml.safe_load(bundle.to_yaml())
    assert list(doc) == ["cluster", "secrets", "trustdinfo", "certs"]
    assert set(doc["cluster"]) == {"id", "secret"}
    assert set(doc["secrets"]) == {"bootstraptoken", "secretboxencryptionsecret"}
    assert set(doc["trustdinfo"]) == {"token"}
    assert set(doc["certs"]) == {"etcd", "k8s", "k8saggregator", "k8sserviceaccount", "os"}
    assert set(doc["certs"]["k8sserviceaccount"]) == {"key"}
    # every crt/key value is base64 of PEM text
    for name, pair in doc["certs"].items():
        for value in pair.values():
            assert base64.b64decode(value).startswith(b"-----BEGIN "), name
    assert parse_secrets(bundle.to_yaml(), "x").to_dict() == bundle.to_dict()


def test_ensure_secrets_creates_once_0600_and_never_overwrites(make_site) -> None:
    site = make_site(with_secrets=False)
    path = site.state_dir / "secrets.yaml"
    assert not path.exists()
    first = ensure_secrets(site)
    assert path.stat().st_mode & 0o777 == 0o600
    assert site.state_dir.stat().st_mode & 0o777 == 0o700
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
    second = ensure_secrets(site)
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before
    assert second.to_dict() == first.to_dict()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".secrets.yaml.")]  # no temp files left


def test_a_bundle_is_parsed_once_per_version_of_its_file(
    make_site, monkeypatch: pytest.MonkeyPatch, bundle: SecretsBundle
) -> None:
    """The secrets and configs stages of one `up` both need the bundle: the file this process
    wrote, or read and has not seen change, is not parsed (every key validated) again; a replaced
    file is."""
    import provisioner.talos.secrets as secrets_module

    parsed: list[str] = []
    real_parse = secrets_module.parse_secrets

    def counting_parse(data: bytes, source: str) -> SecretsBundle:
        parsed.append(source)
        return real_parse(data, source)

    monkeypatch.setattr(secrets_module, "parse_secrets", counting_parse)
    site = make_site(with_secrets=False)
    path = site.state_dir / "secrets.yaml"
    generated = ensure_secrets(site)
    assert load_secrets(path) is generated and ensure_secrets(site) is generated
    assert parsed == []
    replaced = path.with_name("replacement.yaml")
    replaced.write_bytes(bundle.to_yaml())
    os.chmod(replaced, 0o600)
    os.replace(replaced, path)  # the operator restores another bundle: a new file
    assert load_secrets(path).to_dict() == bundle.to_dict()
    assert load_secrets(path).to_dict() == bundle.to_dict()
    assert parsed == [str(path)]
    path.write_bytes(b"certs: {}\n")  # edited in place: its size and time change
    with pytest.raises(InputError):
        load_secrets(path)


def test_import_gives_the_same_cas_and_refuses_different_ones(make_site, tmp_path: Path,
                                                              bundle: SecretsBundle) -> None:
    site = make_site(with_secrets=False)
    exported = tmp_path / "talosctl-secrets.yaml"
    exported.write_bytes(bundle.to_yaml())
    imported, created = import_secrets(site, exported)
    assert created
    assert imported.ca_fingerprints() == bundle.ca_fingerprints()
    assert load_secrets(site.state_dir / "secrets.yaml").to_dict() == bundle.to_dict()
    assert (site.state_dir / "secrets.yaml").stat().st_mode & 0o777 == 0o600
    # the same file again: a no-op
    assert import_secrets(site, exported)[1] is False
    # a different bundle: refused, existing file untouched
    other = tmp_path / "other.yaml"
    doc = yaml.safe_load(bundle.to_yaml())
    doc["cluster"]["secret"] = base64.b64encode(os.urandom(32)).decode()
    other.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="already holds different cluster secrets"):
        import_secrets(site, other)
    assert load_secrets(site.state_dir / "secrets.yaml").to_dict() == bundle.to_dict()


def test_talosctl_style_bundle_with_aescbc_round_trips(bundle: SecretsBundle) -> None:
    doc = yaml.safe_load(bundle.to_yaml())
    doc["secrets"]["aescbcencryptionsecret"] = base64.b64encode(b"k" * 32).decode()
    text = yaml.safe_dump(doc, indent=4).encode()
    parsed = parse_secrets(text, "talosctl.yaml")
    assert parsed.aescbc_encryption_secret == doc["secrets"]["aescbcencryptionsecret"]
    assert yaml.safe_load(parsed.to_yaml()) == doc


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["certs"].pop("os"), r"certs\.os\.crt is missing"),
        (lambda d: d["trustdinfo"].update(token="NOT-A-TOKEN"), r"trustdinfo\.token must look like"),
        (lambda d: d["certs"]["etcd"].update(key="%%%"), r"certs\.etcd\.key is not base64"),
        (lambda d: d["certs"]["os"].update(key=d["certs"]["etcd"]["key"]), r"certs\.os\.key must be ed25519"),
        (lambda d: d["certs"]["k8s"].update(key=d["certs"]["etcd"]["key"]),
         r"certs\.k8s\.key does not belong to certs\.k8s\.crt"),
    ],
)
def test_bad_bundles_name_the_field_and_leak_nothing(bundle: SecretsBundle, mutate, message: str) -> None:
    doc = yaml.safe_load(bundle.to_yaml())
    mutate(doc)
    with pytest.raises(InputError, match=message) as info:
        parse_secrets(yaml.safe_dump(doc).encode(), "bad.yaml")
    text = str(info.value)
    for secret in (bundle.cluster_secret, bundle.trustd_token, pki.b64(bundle.os.key)[:40]):
        assert secret not in text


def test_repr_never_shows_secret_material(bundle: SecretsBundle) -> None:
    text = repr(bundle) + str(bundle)
    assert bundle.cluster_id not in text and bundle.cluster_secret not in text
    assert bundle.bootstrap_token not in text and b"PRIVATE" not in text.encode()
