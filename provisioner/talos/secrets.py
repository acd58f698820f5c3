"""The cluster secrets bundle, in the exact format of ``talosctl gen secrets``.

Generated once per cluster into ``<state_dir>/secrets.yaml`` (0600, atomic, never
overwritten: losing or replacing it orphans every running node). ``--from FILE`` imports
a bundle made by ``talosctl`` instead, so an operator can switch tools in both directions.
Errors never quote values from the file: they name the field that is wrong.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets as _random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..errors import InputError
from ..fsutil import locked, private_dir, write_once
from ..inventory.model import Site
from ..layout import StateLayout
from ..statedir import refuse_if_nodes_installed, refuse_if_state_elsewhere
from . import pki
from .pki import KeyPair

log = logging.getLogger(__name__)

SECRETS_FILE = "secrets.yaml"
_TOKEN = re.compile(r"^[0-9a-z]{6}\.[0-9a-z]{16}$")


@dataclass(frozen=True)
class SecretsBundle:
    """Every secret of one cluster. PEM fields are bytes; the rest are the strings Talos stores."""

    cluster_id: str
    cluster_secret: str
    bootstrap_token: str
    secretbox_encryption_secret: str
    trustd_token: str
    etcd: KeyPair
    k8s: KeyPair
    k8s_aggregator: KeyPair
    k8s_service_account: KeyPair  # key only (crt is None)
    os: KeyPair
    aescbc_encryption_secret: str | None = None  # older bundles carry it; kept for round trips

    def __repr__(self) -> str:  # never let a traceback or log line show key material
        return f"SecretsBundle(cluster_id=<redacted>, os_ca={pki.fingerprint(self.os.crt or b'')})"

    __str__ = __repr__

    def to_dict(self) -> dict[str, Any]:
        """The ``talosctl gen secrets`` layout (key order as talosctl writes it)."""
        secrets_section: dict[str, str] = {"bootstraptoken": self.bootstrap_token}
        if self.aescbc_encryption_secret is not None:
            secrets_section["aescbcencryptionsecret"] = self.aescbc_encryption_secret
        secrets_section["secretboxencryptionsecret"] = self.secretbox_encryption_secret

        def pair(kp: KeyPair) -> dict[str, str]:
            out = {"crt": pki.b64(kp.crt)} if kp.crt is not None else {}
            out["key"] = pki.b64(kp.key)
            return out

        return {
            "cluster": {"id": self.cluster_id, "secret": self.cluster_secret},
            "secrets": secrets_section,
            "trustdinfo": {"token": self.trustd_token},
            "certs": {
                "etcd": pair(self.etcd),
                "k8s": pair(self.k8s),
                "k8saggregator": pair(self.k8s_aggregator),
                "k8sserviceaccount": pair(self.k8s_service_account),
                "os": pair(self.os),
            },
        }

    def to_yaml(self) -> bytes:
        text = yaml.dump(self.to_dict(), Dumper=yaml.SafeDumper, sort_keys=False, indent=4, width=1 << 16)
        return text.encode()

    def ca_fingerprints(self) -> dict[str, str]:
        """Public identifiers of the CAs, for summaries and checks."""
        return {
            name: pki.fingerprint(kp.crt)
            for name, kp in (("etcd", self.etcd), ("k8s", self.k8s), ("k8saggregator", self.k8s_aggregator),
                             ("os", self.os))
            if kp.crt is not None
        }


def generate_secrets() -> SecretsBundle:
    """A fresh bundle with talosctl's algorithms: ECDSA P-256 etcd/k8s/aggregator CAs, an
    Ed25519 OS CA, an RSA-4096 service-account key, tokens and 32-byte random secrets."""
    return SecretsBundle(
        cluster_id=base64.urlsafe_b64encode(_random.token_bytes(32)).decode(),
        cluster_secret=base64.b64encode(_random.token_bytes(32)).decode(),
        bootstrap_token=pki.random_token(),
        secretbox_encryption_secret=base64.b64encode(_random.token_bytes(32)).decode(),
        trustd_token=pki.random_token(),
        etcd=pki.new_ca("etcd", "ecdsa"),
        k8s=pki.new_ca("kubernetes", "ecdsa"),
        k8s_aggregator=pki.new_ca(None, "ecdsa"),
        k8s_service_account=KeyPair(None, pki.new_rsa_key(4096)),
        os=pki.new_ca("talos", "ed25519"),
    )


def parse_secrets(data: bytes, source: str) -> SecretsBundle:
    """Parse and check a talosctl ``secrets.yaml``; ``source`` names it in error messages."""
    try:
        doc = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{source}: not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a talosctl secrets bundle (mapping of cluster, secrets, certs)")

    def get(path: str, required: bool = True) -> Any:
        node: Any = doc
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                if not required:
                    return None
                raise InputError(f"{source}: {path} is missing")
            node = node[part]
        if not isinstance(node, str) or not node:
            raise InputError(f"{source}: {path} must be a non-empty string")
        return node

    def pem(path: str) -> bytes:
        try:
            raw = pki.unb64(get(path))
        except (binascii.Error, ValueError):
            raise InputError(f"{source}: {path} is not base64") from None
        if not raw.startswith(b"-----BEGIN "):
            raise InputError(f"{source}: {path} is not base64 of a PEM block")
        return raw

    def ca(name: str, want: str) -> KeyPair:
        crt, key = pem(f"certs.{name}.crt"), pem(f"certs.{name}.key")
        try:
            cert = x509.load_pem_x509_certificate(crt)
            priv = pki.load_private_key(key)
        except ValueError:
            raise InputError(f"{source}: certs.{name} does not hold a readable certificate and key") from None
        if not _key_matches(priv, want):
            raise InputError(f"{source}: certs.{name}.key must be {want}")
        if pki.public_der(cert.public_key()) != pki.public_der(priv.public_key()):
            raise InputError(f"{source}: certs.{name}.key does not belong to certs.{name}.crt")
        return KeyPair(crt, key)

    for field in ("secrets.bootstraptoken", "trustdinfo.token"):
        if not _TOKEN.match(get(field)):
            raise InputError(f"{source}: {field} must look like [0-9a-z]{{6}}.[0-9a-z]{{16}}")
    sa_key = pem("certs.k8sserviceaccount.key")
    try:
        sa = pki.load_private_key(sa_key)
    except ValueError:
        raise InputError(f"{source}: certs.k8sserviceaccount.key is not a readable private key") from None
    if not isinstance(sa, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InputError(f"{source}: certs.k8sserviceaccount.key must be an RSA or ECDSA key")
    return SecretsBundle(
        cluster_id=get("cluster.id"),
        cluster_secret=get("cluster.secret"),
        bootstrap_token=get("secrets.bootstraptoken"),
        secretbox_encryption_secret=get("secrets.secretboxencryptionsecret"),
        aescbc_encryption_secret=get("secrets.aescbcencryptionsecret", required=False),
        trustd_token=get("trustdinfo.token"),
        etcd=ca("etcd", "ecdsa"),
        k8s=ca("k8s", "ecdsa"),
        k8s_aggregator=ca("k8saggregator", "ecdsa"),
        k8s_service_account=KeyPair(None, sa_key),
        os=ca("os", "ed25519"),
    )


def _key_matches(key: pki.PrivateKey, want: str) -> bool:
    if want == "ed25519":
        return isinstance(key, ed25519.Ed25519PrivateKey)
    # talosctl has made RSA CAs in the past; accept what Talos itself accepts for the CAs
    return isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)


# Bundles this process has read or written, by file and the file's version (inode, size, mtime).
# Parsing validates every key, and OpenSSL's check of the RSA-4096 service-account key alone
# takes about 0.23 s: one `up` read the bundle in its secrets stage and again in its configs stage.
_known: dict[Path, tuple[tuple[int, int, int], SecretsBundle]] = {}


def _version(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load_secrets(path: Path) -> SecretsBundle:
    """Read a secrets bundle written by this tool or by ``talosctl gen secrets``; a file this
    process has already read or written, unchanged since, is not parsed again."""
    path = Path(path)
    version = _version(path)  # taken before the read: a file replaced meanwhile is read again next time
    known = _known.get(path.absolute())
    if version is not None and known is not None and known[0] == version:
        return known[1]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read secrets bundle: {exc.strerror}") from None
    bundle = parse_secrets(data, str(path))
    if version is not None:
        _known[path.absolute()] = (version, bundle)
    return bundle


def secrets_path(site: Site) -> Path:
    return StateLayout(site.state_dir).secrets


def ensure_secrets(site: Site, *, ignore_installed_nodes: bool = False) -> SecretsBundle:
    """The cluster's bundle: reused if ``secrets.yaml`` exists, else generated once (0600).

    Under a lock and with a create-if-absent link, so two concurrent runs end up with the
    same bundle and an existing file is never replaced. Before creating one, the guards of
    ``statedir.py`` look for this site's state elsewhere and for nodes already installed under
    other secrets (``ignore_installed_nodes``: the operator's explicit override, logged).
    """
    path = secrets_path(site)
    if not path.exists():
        refuse_if_state_elsewhere(site)  # an older run's state elsewhere: no second CA
        refuse_if_nodes_installed(site, ignore=ignore_installed_nodes)  # nodes of another CA
    private_dir(path.parent)
    with locked(path.with_name(".secrets.lock")):
        if path.exists():
            return load_secrets(path)
        bundle = generate_secrets()
        if write_once(path, bundle.to_yaml(), mode=0o600):
            log.info("generated cluster secrets bundle %s", path)
            version = _version(path)
            if version is not None:
                _known[path.absolute()] = (version, bundle)
            return bundle
        return load_secrets(path)


def import_secrets(site: Site, source: Path) -> tuple[SecretsBundle, bool]:
    """Adopt a talosctl ``secrets.yaml``; returns (bundle, True if the state file was created).

    Importing the same secrets again is a no-op; importing different ones over an existing
    bundle is refused, because it would silently cut every installed node off.
    """
    bundle = load_secrets(source)
    path = secrets_path(site)
    private_dir(path.parent)
    with locked(path.with_name(".secrets.lock")):
        if path.exists():
            current = load_secrets(path)
            if current.to_dict() != bundle.to_dict():
                raise InputError(
                    f"{path} already holds different cluster secrets; refusing to replace them "
                    f"(move it away first if this cluster is really being rebuilt)"
                )
            return current, False
        created = write_once(path, bundle.to_yaml(), mode=0o600)
        return (bundle if created else load_secrets(path)), created
