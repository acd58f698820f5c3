"""`provisioner secrets generate` and `provisioner configs generate|diff` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from provisioner.cli import main
from provisioner.talos.secrets import load_secrets


def _secret_strings(state: Path) -> list[str]:
    b = load_secrets(state / "secrets.yaml")
    doc = b.to_dict()
    values = [b.cluster_id, b.cluster_secret, b.bootstrap_token, b.trustd_token]
    values.append(b.secretbox_encryption_secret)
    values += [pair["key"][:60] for pair in doc["certs"].values()]
    tc = yaml.safe_load((state / "talosconfig").read_text()) if (state / "talosconfig").exists() else None
    if tc:
        values.append(tc["contexts"][tc["context"]]["key"][:60])
    return values


def test_cli_generates_reuses_and_never_prints_secrets(make_site, capsys, tmp_path: Path) -> None:
    site = make_site(with_secrets=False)
    inv = str(site.source)
    assert main(["-i", inv, "-o", "json", "secrets", "generate"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["created"] is True and set(out["ca_fingerprints"]) == {"etcd", "k8s", "k8saggregator", "os"}
    state = site.state_dir
    before = (state / "secrets.yaml").read_bytes()
    assert main(["-i", inv, "-o", "json", "secrets", "generate"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] is False
    assert (state / "secrets.yaml").read_bytes() == before

    assert main(["-i", inv, "-o", "json", "configs", "generate"]) == 0
    gen = capsys.readouterr()
    summary = json.loads(gen.out)
    assert sorted(summary["machine_configs"]) == ["cp1", "cp2", "cp3", "w1"]
    assert main(["-i", inv, "configs", "generate", "--rack", "lab"]) == 0
    text = capsys.readouterr()
    assert "4 machine configs" in text.out and "(0 changed)" in text.out

    # a changed inventory: diff shows the change, with secrets redacted
    data = yaml.safe_load(Path(inv).read_text())
    data["networks"]["management"]["dns"] = ["192.168.77.53"]
    Path(inv).write_text(yaml.safe_dump(data))
    assert main(["-i", inv, "-o", "json", "configs", "diff", "--node", "cp1"]) == 0
    diff = capsys.readouterr()
    rows = json.loads(diff.out)
    assert [r["status"] for r in rows] == ["changed"]
    assert "+        - 192.168.77.53" in rows[0]["diff"] and "-        - 192.168.77.1" in rows[0]["diff"]
    everything = gen.out + gen.err + text.out + text.err + diff.out + diff.err
    for secret in _secret_strings(state):
        assert secret not in everything


def test_diff_redacts_changed_secret_values(make_site, capsys, tmp_path: Path) -> None:
    site = make_site()
    inv = str(site.source)
    assert main(["-i", inv, "configs", "generate"]) == 0
    capsys.readouterr()
    # someone hand-edited a token into the file: the diff shows that it differs, not the value
    cfg = site.state_dir / "configs" / "w1.yaml"
    cfg.write_text(cfg.read_text().replace("token: ", "token: x", 1))
    assert main(["-i", inv, "configs", "diff"]) == 0
    out = capsys.readouterr().out
    assert "<redacted sha256:" in out and "cp1: unchanged" in out
    for secret in _secret_strings(site.state_dir):
        assert secret not in out


def test_cli_import_and_bad_input_exit_2(make_site, capsys, tmp_path: Path, bundle) -> None:
    site = make_site(with_secrets=False)
    inv = str(site.source)
    src = tmp_path / "talosctl-secrets.yaml"
    src.write_bytes(bundle.to_yaml())
    assert main(["-i", inv, "secrets", "generate", "--from", str(src)]) == 0
    assert "imported secrets bundle" in capsys.readouterr().out
    assert load_secrets(site.state_dir / "secrets.yaml").ca_fingerprints() == bundle.ca_fingerprints()

    broken = tmp_path / "broken.yaml"
    broken.write_text("cluster: {id: x}\n")
    assert main(["-i", inv, "secrets", "generate", "--from", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err and "is missing" in err and "Traceback" not in err

    assert main(["-i", inv, "configs", "generate", "--node", "nope"]) == 2
    assert "no such node" in capsys.readouterr().err
