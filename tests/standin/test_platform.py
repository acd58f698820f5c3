"""Install layout, wipe, the disk boot line, the ext4 label probe and the kubeconfig generator."""

from __future__ import annotations

import base64
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from standin_helpers import Secrets, loopback_prefix

from provisioner.lab.standin import platform
from provisioner.lab.standin.kubeconfig import admin_kubeconfig

CMDLINE = {
    "talos.platform": "metal",
    "console": "ttyS0",
    "pti": "on",
    "talos.config": "http://h/c?uuid=",
    "standin.kernel": "http://h/k",
    "standin.initrd": "http://h/i",
    "slab_nomerge": "",
}


def test_disk_append_line_keeps_kernel_args_and_marks_disk_boot() -> None:
    line = platform.disk_append_line(CMDLINE)
    assert line.split() == [
        "talos.platform=metal",
        "console=ttyS0",
        "pti=on",
        "slab_nomerge",
        "standin.boot=disk",
    ]


def test_dir_install_writes_boot_files_and_private_config_then_wipe_blanks(tmp_path: Path) -> None:
    for d in ("sda", "vdb"):
        (tmp_path / "disks" / d).mkdir(parents=True)
    p = platform.DirPlatform(tmp_path, "127.0.0.1")
    assert p.disks() == ["/dev/sda", "/dev/vdb"]
    assert p.find_installed() is None
    with pytest.raises(platform.PlatformError, match="/dev/nvme0n1"):
        p.install("/dev/nvme0n1", b"cfg", platform.BootFiles(b"k", b"i"), CMDLINE)
    root = p.install("/dev/vdb", b"version: v1alpha1\n", platform.BootFiles(b"kernel", b"initrd"), CMDLINE)
    assert p.find_installed() == root == tmp_path / "disks/vdb"
    assert (root / "boot/vmlinuz").read_bytes() == b"kernel"
    assert (root / "boot/initramfs.zst").read_bytes() == b"initrd"
    assert stat.S_IMODE((root / "config.yaml").stat().st_mode) == 0o600
    assert "standin.boot=disk" in (root / "boot/extlinux.conf").read_text()
    p.wipe("/dev/vdb")
    assert p.find_installed() is None
    assert list(root.iterdir()) == []


def test_dir_vip_forwards_to_the_node_address() -> None:
    prefix = loopback_prefix()
    node, vip = f"{prefix}.1", f"{prefix}.100"
    backend = socket.create_server((node, 0))
    port = backend.getsockname()[1]
    p = platform.DirPlatform(Path("/nonexistent"), node)
    p.claim_vip(vip, [port])
    try:
        with socket.create_connection((vip, port), timeout=5) as c:
            conn, _ = backend.accept()
            c.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()
    finally:
        p.release_vip(vip)
        backend.close()
    with pytest.raises(OSError):
        socket.create_connection((vip, port), timeout=2)


def test_ext4_label_probe_sees_the_features_extlinux_needs(tmp_path: Path) -> None:
    img = tmp_path / "part.img"
    with open(img, "wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    subprocess.run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            platform.MKE2FS_FEATURES,
            "-L",
            platform.FS_LABEL,
            str(img),
        ],
        check=True,
    )
    assert platform._ext4_label(str(img)) == "STANDIN"
    features = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True).stdout
    assert "64bit" not in features and "metadata_csum" not in features
    vm = platform.VMPlatform()
    vm.wipe_signatures(str(img))  # what Reset does to the install disk
    assert platform._ext4_label(str(img)) == ""


def test_admin_kubeconfig_chains_to_the_kubernetes_ca() -> None:
    secrets = Secrets.new()
    assert secrets.k8s_ca.crt is not None
    text = admin_kubeconfig("lab", "https://10.0.0.10:6443", secrets.k8s_ca.crt, secrets.k8s_ca.key)
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "admin@lab"
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.0.10:6443"
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == secrets.k8s_ca.crt
    crt = x509.load_pem_x509_certificate(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))
    ca = x509.load_pem_x509_certificate(secrets.k8s_ca.crt)
    crt.verify_directly_issued_by(ca)
    assert crt.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert list(crt.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    key = base64.b64decode(doc["users"][0]["user"]["client-key-data"])
    assert b"EC PRIVATE KEY" in key
    other = Secrets.new()
    assert other.k8s_ca.crt is not None
    with pytest.raises(InvalidSignature):
        crt.verify_directly_issued_by(x509.load_pem_x509_certificate(other.k8s_ca.crt))
    assert isinstance(crt.public_key(), ec.EllipticCurvePublicKey)
