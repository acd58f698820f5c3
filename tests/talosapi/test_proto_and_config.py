"""The .proto subset matches Talos's wire contract, gen/ is current, the config scanner agrees with YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.lab.standin.apid import check_config, kubeconfig_targz, scan_config
from provisioner.talosapi import protogen, tls
from provisioner.talosapi.gen.common import common_pb2
from provisioner.talosapi.gen.machine import machine_grpc, machine_pb2
from provisioner.talosapi.gen.security import security_grpc, security_pb2

# (message, field) -> number, from shared/reference/talos.md and Talos's security.proto.
FIELD_NUMBERS = {
    (machine_pb2.ApplyConfigurationRequest, "data"): 1,
    (machine_pb2.ApplyConfigurationRequest, "mode"): 4,
    (machine_pb2.ApplyConfigurationRequest, "dry_run"): 5,
    (machine_pb2.ApplyConfigurationRequest, "try_mode_timeout"): 6,
    (machine_pb2.ApplyConfiguration, "metadata"): 1,
    (machine_pb2.ApplyConfiguration, "warnings"): 2,
    (machine_pb2.ApplyConfiguration, "mode"): 3,
    (machine_pb2.ApplyConfiguration, "mode_details"): 4,
    (machine_pb2.BootstrapRequest, "recover_etcd"): 1,
    (machine_pb2.BootstrapRequest, "recover_skip_hash_check"): 2,
    (machine_pb2.Version, "version"): 2,
    (machine_pb2.Version, "platform"): 3,
    (machine_pb2.Version, "features"): 4,
    (machine_pb2.VersionInfo, "tag"): 1,
    (machine_pb2.VersionInfo, "arch"): 6,
    (machine_pb2.PlatformInfo, "mode"): 2,
    (machine_pb2.EtcdMemberListRequest, "query_local"): 1,
    (machine_pb2.EtcdMembers, "legacy_members"): 2,
    (machine_pb2.EtcdMembers, "members"): 3,
    (machine_pb2.EtcdMember, "id"): 2,
    (machine_pb2.EtcdMember, "hostname"): 3,
    (machine_pb2.EtcdMember, "peer_urls"): 4,
    (machine_pb2.EtcdMember, "client_urls"): 5,
    (machine_pb2.EtcdMember, "is_learner"): 6,
    (machine_pb2.ServiceList, "services"): 2,
    (machine_pb2.ServiceInfo, "id"): 1,
    (machine_pb2.ServiceInfo, "state"): 2,
    (machine_pb2.ResetRequest, "graceful"): 1,
    (machine_pb2.ResetRequest, "reboot"): 2,
    (machine_pb2.ResetRequest, "mode"): 5,
    (common_pb2.Metadata, "hostname"): 1,
    (common_pb2.Metadata, "error"): 2,
    (common_pb2.Metadata, "status"): 3,
    (common_pb2.Data, "bytes"): 2,
    (security_pb2.CertificateRequest, "csr"): 1,
    (security_pb2.CertificateResponse, "ca"): 1,
    (security_pb2.CertificateResponse, "crt"): 2,
}


@pytest.mark.parametrize(("message", "field"), list(FIELD_NUMBERS), ids=lambda v: getattr(v, "__name__", v))
def test_field_numbers_match_talos(message: type, field: str) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == FIELD_NUMBERS[(message, field)]


def test_wire_names_match_talos() -> None:
    assert machine_pb2.DESCRIPTOR.services_by_name["MachineService"].full_name == "machine.MachineService"
    assert machine_pb2.ApplyConfigurationRequest.Mode.Value("TRY") == 4
    assert machine_pb2.ResetRequest.WipeMode.Value("USER_DISKS") == 2
    assert (
        common_pb2.Metadata.DESCRIPTOR.fields_by_name["status"].message_type.full_name == "google.rpc.Status"
    )
    paths = set(machine_grpc.MachineServiceStub.__init__.__code__.co_consts)
    assert "/machine.MachineService/Bootstrap" in paths
    assert "/machine.MachineService/Kubeconfig" in paths
    assert "/securityapi.SecurityService/Certificate" in set(
        security_grpc.SecurityServiceStub.__init__.__code__.co_consts
    )


def test_committed_gen_is_what_make_proto_produces(tmp_path: Path) -> None:
    protogen.generate(tmp_path / "gen")
    def sources(root: Path) -> dict[Path, str]:
        return {p.relative_to(root): p.read_text() for p in root.rglob("*") if p.suffix in (".py", ".pyi")}

    fresh, committed = sources(tmp_path / "gen"), sources(protogen.GEN_ROOT)
    assert fresh.keys() == committed.keys()
    stale = [str(k) for k in fresh if fresh[k] != committed[k]]
    assert stale == [], f"run `make proto`: {stale}"


CONFIGS = [
    {
        "version": "v1alpha1",
        "machine": {"type": "worker", "install": {"disk": "/dev/vda"}},
        "cluster": {"id": "x"},
    },
    {"version": "v1alpha1", "machine": {"install": {"diskSelector": {"size": ">= 10GB"}}}, "cluster": {}},
    {
        "version": "v1alpha1",
        "machine": {
            "network": {"interfaces": [{"interface": "eth0", "disk": "/dev/x"}]},
            "install": {"image": "i", "disk": "/dev/sda"},
        },
        "cluster": {"a": 1},
    },
    {"version": "v1alpha2", "machine": {}, "cluster": {}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
    {"version": "v1alpha1", "debug": False, "cluster": {"install": {"disk": "/dev/nope"}}},
]


@pytest.mark.parametrize("doc", CONFIGS)
@pytest.mark.parametrize("indent", [2, 4])
def test_scanner_agrees_with_a_yaml_parser(doc: dict[str, object], indent: int) -> None:
    text = yaml.safe_dump(doc, indent=indent, sort_keys=False)
    text += "---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n"  # v1.12+ second document
    summary = scan_config(text)
    first = next(yaml.safe_load_all(text))
    machine = first.get("machine") or {}
    install = machine.get("install") or {}
    assert summary.version == first.get("version")
    assert summary.top_keys == frozenset(first)
    assert summary.install_disk == install.get("disk")


def test_check_config_verdicts() -> None:
    ok = b"version: v1alpha1\nmachine:\n  install:\n    disk: '/dev/vda'  # the virtio disk\ncluster: {}\n"
    assert check_config(ok, ["/dev/vda"]) is None
    assert "does not exist" in (check_config(ok, ["/dev/sda"]) or "")
    assert check_config(b"version: v1alpha1\nmachine: {}\ncluster: {}\n", []) is None  # no disk named


def test_kubeconfig_archive_round_trip() -> None:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(kubeconfig_targz(b"kc")), mode="r:gz") as tar:
        member = tar.getmember("kubeconfig")
        assert member.mode == 0o600
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == b"kc"


def test_pins_in_any_common_notation() -> None:
    hexpin = "0f" * 32
    assert tls.normalize_pin(hexpin.upper()) == hexpin
    assert tls.normalize_pin(":".join(["0f"] * 32)) == hexpin
    assert tls.normalize_pin("Dw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8=") == hexpin
    with pytest.raises(ValueError, match="not a SHA-256"):
        tls.normalize_pin("abc")


def test_talos_ed25519_key_label_is_loadable_by_ssl() -> None:
    import ssl

    from provisioner.talos import pki

    ca = pki.new_ca("talos", "ed25519")
    client = pki.new_client_cert(ca, "os:admin")
    assert b"ED25519 PRIVATE KEY" in client.key
    assert client.crt is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.load_cert_chain(ctx, client.crt, client.key)  # raises ssl.SSLError without the label rewrite
