"""`configs diff` never shows a secret, including the ones patches add (registry auth)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from provisioner.cli import main
from provisioner.talos.redact import digest, is_secret_key, redact_text

PASSWORD = "Hunter2-registry-Pa55"
AUTH = "dXNlcjpIdW50ZXIyLXJlZ2lzdHJ5LVBhNTU="
IDENTITY_TOKEN = "idtok-8f1e2d3c4b5a"


def _registry_patch(path: Path) -> None:
    path.write_text(
        "machine:\n"
        "  registries:\n"
        "    mirrors:\n"
        "      docker.io:\n"
        "        endpoints: [https://registry.example.com]\n"
        "    config:\n"
        "      registry.example.com:\n"
        f"        auth: {{username: puller, password: {PASSWORD}, auth: {AUTH}}}\n"
        "      other.example.com:\n"
        "        auth:\n"
        f"          identityToken: {IDENTITY_TOKEN}\n"
    )


def test_a_registry_password_patch_shows_no_password(make_site, capsys, tmp_path: Path) -> None:
    site = make_site()
    inv = Path(site.source)
    assert main(["-i", str(inv), "configs", "generate"]) == 0
    capsys.readouterr()
    _registry_patch(tmp_path / "registry.yaml")
    data = yaml.safe_load(inv.read_text())
    data["cluster"]["talos"]["config_patches"] = ["registry.yaml"]
    inv.write_text(yaml.safe_dump(data, sort_keys=False))

    assert main(["-i", str(inv), "configs", "diff", "--node", "cp1"]) == 0
    text = capsys.readouterr().out
    assert main(["-i", str(inv), "-o", "json", "configs", "diff"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in rows} == {"changed"}
    everything = text + json.dumps(rows)
    for secret in (PASSWORD, AUTH, IDENTITY_TOKEN, "puller"):
        assert secret not in everything
    # What changed is still visible: the registry names and a redacted auth value.
    assert "+            registry.example.com:" in text
    assert "+                auth: <redacted sha256:" in text
    assert "https://registry.example.com" in text


def test_secret_keys_are_recognised_by_name() -> None:
    for name in (
        "key",
        "crt",
        "ca.crt",
        "caCert",
        "bootstrapToken",
        "secretboxEncryptionSecret",
        "aescbcEncryptionSecret",
        "password",
        "auth",
        "identityToken",
        "PrivateKey",
        "id",
    ):
        assert is_secret_key(name), name
    for name in ("certSANs", "endpoints", "hostname", "image", "disk", 3):
        assert not is_secret_key(name), name


def test_every_secret_shape_is_redacted_and_changes_still_show() -> None:
    doc = (
        "version: v1alpha1\n"
        "machine:\n"
        "  token: abcdef.0123456789abcdef\n"
        "  ca: {crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t, key: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0t}\n"
        "  files:\n"
        "    - content: |\n"
        "        -----BEGIN RSA PRIVATE KEY-----\n"
        "        MIIEowIBAAKCAQEA\n"
        "        -----END RSA PRIVATE KEY-----\n"
        "      path: /var/x.pem\n"
        "    - content: 'join with zyxwvu.0123456789zyxwvu please'\n"
        "      path: /var/y\n"
        "  certSANs: [10.0.0.1]\n"
        "cluster:\n"
        "  id: clusterid123\n"
        "  secretboxEncryptionSecret: sb-secret-value\n"
        "  aescbcEncryptionSecret: aes-secret-value\n"
    )
    out = redact_text(doc)
    for secret in (
        "abcdef.0123456789abcdef",
        "LS0tLS1CRUdJTi",
        "MIIEowIBAAKCAQEA",
        "zyxwvu.0123456789zyxwvu",
        "clusterid123",
        "sb-secret-value",
        "aes-secret-value",
        "PRIVATE KEY",
    ):
        assert secret not in out, secret
    assert "10.0.0.1" in out and "/var/x.pem" in out and "join with" in out
    changed = redact_text(doc.replace("sb-secret-value", "sb-secret-other"))
    assert changed != out and digest("sb-secret-other") in changed


def test_passwords_in_urls_are_redacted_wherever_they_sit() -> None:
    doc = (
        "machine:\n"
        "  env:\n"
        "    HTTPS_PROXY: http://proxyuser:Pr0xy-Pa55@proxy.example.com:3128\n"
        "    NO_PROXY: 10.0.0.0/8\n"
    )
    out = redact_text(doc)
    assert "Pr0xy-Pa55" not in out
    assert "http://proxyuser:<redacted sha256:" in out and "@proxy.example.com:3128" in out
    assert "NO_PROXY: 10.0.0.0/8" in out


def test_text_that_is_not_yaml_is_still_redacted() -> None:
    broken = (
        "machine:\n  registries: [unclosed\n"
        f"    auth:\n      password: {PASSWORD}\n      username: puller\n"
        f"  token: tok-123\n  password: {PASSWORD}\n"
        "  hostname: node-1\n"
    )
    out = redact_text(broken)
    assert PASSWORD not in out and "puller" not in out and "tok-123" not in out
    assert "hostname: node-1" in out
