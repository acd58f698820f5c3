"""The UEFI install disk, for real: ``VMPlatform.install`` (the code the stand-in runs in a VM) writes
GPT + ESP (systemd-boot) + ext4 onto a loop device on the host, then one QEMU VM with OVMF and no
network boots that disk, and its serial console must show the firmware starting the disk's loader,
the kernel started with the installed command line (``standin.boot=disk``) and the stand-in's /init.
``wipe`` must then leave nothing the firmware can boot.

Inputs come from the Debian packages the lab image is built from (the image's .deb cache): the
kernel, systemd-boot and busybox. The initramfs is small on purpose (busybox + the real
``init.sh``), so the boot under TCG stays within a minute or two; the full image would add tens of
MiB to read and unpack and prove nothing more about the boot path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.inventory.model import Node
from provisioner.lab import image
from provisioner.lab.machine import BootSetting
from provisioner.lab.qemu import Disk, QemuSpec, ensure_uefi_vars, firmware_argv
from provisioner.lab.standin import platform
from provisioner.netboot import ipxe

CMDLINE = {
    "talos.platform": "metal",
    "console": "ttyS0",
    "talos.config": "http://192.0.2.1/config?uuid=${uuid}",
    "standin.kernel": "http://192.0.2.1/vmlinuz",
    "initrd": "initramfs.zst",
}
DISK_MIB = 512
MAC = "52:54:00:78:00:21"
BOOT_TIMEOUT = 420.0  # TCG on two shared cores; typically well under two minutes
INIT_LINE = re.compile(r"talos stand-in: init: \[[^]]*\] starting on \S+, cmdline: (.*)")
# The stand-in's /init writes its line from user space while the kernel may still print on the same
# serial port, so a whole kernel message ("[    1.849922] tsc: ...") can land inside that line.
KERNEL_MESSAGE = re.compile(r"\[\s*\d+\.\d+\][^\r\n]*(\r?\n)?")


def init_cmdline(console: str, init: re.Match[str]) -> list[str]:
    """The command line /init printed, with any kernel message that interleaved with it taken out."""
    text = KERNEL_MESSAGE.sub("", console[init.start(1) :])
    return text.splitlines()[0].split() if text else []


# After the disk's option fails, OVMF (no NIC here) moves on to its built-in shell.
PAST_DISK = re.compile(r"BdsDxe: (loading|starting) Boot\w+ \"EFI Internal Shell\"")


def _cache() -> Path:
    return Path(os.environ.get("PROVISIONER_LAB_IMAGE_CACHE") or image.DEFAULT_CACHE).expanduser()


@pytest.fixture(scope="module")
def boot_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Kernel, a busybox + init.sh initramfs and systemd-boot, from the image's package cache."""
    cache = _cache()
    kpkg = image.kernel_package()
    debs = image.download_debs([kpkg, "busybox-static", "systemd-boot-efi"], cache / "debs")
    work = tmp_path_factory.mktemp("uefi-inputs")
    # The kernel .deb is large: extract only its vmlinuz, once per kernel version.
    kernel = cache / "uefi-test" / f"{debs[kpkg].stem}.vmlinuz"
    if not kernel.exists():
        kernel.parent.mkdir(parents=True, exist_ok=True)
        kx = work / "kernel"
        kx.mkdir()
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[kpkg])], stdout=subprocess.PIPE)
        subprocess.run(
            ["tar", "-x", "-C", str(kx), "--wildcards", "./boot/vmlinuz-*"], stdin=tar.stdout, check=True
        )
        assert tar.wait() == 0
        tmp = kernel.with_suffix(".tmp")
        shutil.copyfile(next((kx / "boot").glob("vmlinuz-*")), tmp)
        os.replace(tmp, kernel)
    sdboot = work / "sdboot"
    subprocess.run(["dpkg-deb", "-x", str(debs["systemd-boot-efi"]), str(sdboot)], check=True)
    bb = work / "bb"
    subprocess.run(["dpkg-deb", "-x", str(debs["busybox-static"]), str(bb)], check=True)
    root = work / "root"
    for d in ("usr/bin", "usr/sbin", "usr/lib", "proc", "sys", "dev", "run", "tmp", "etc"):
        (root / d).mkdir(parents=True)
    for name in ("bin", "sbin", "lib"):
        (root / name).symlink_to(f"usr/{name}")
    image._merge_usr(bb, root)
    image._busybox_links(root)
    shutil.copy2(image.INIT_SCRIPT, root / "init")
    os.chmod(root / "init", 0o755)
    initrd = work / "initramfs.zst"
    image._pack(root, initrd)
    return {
        "kernel": kernel,
        "initrd": initrd,
        "loader": sdboot / platform.SYSTEMD_BOOT_EFI.lstrip("/"),
    }


@contextlib.contextmanager
def loop_device(path: Path) -> Iterator[str]:
    """Attach ``path`` with partition scanning; always detached again."""
    dev = subprocess.run(
        ["losetup", "-P", "-f", "--show", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def _umount(path: Path) -> None:
    with open("/proc/mounts") as fh:
        if any(line.split()[1] == str(path) for line in fh):
            subprocess.run(["umount", str(path)], check=True)


def _esp_file(part: str, name: str) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    res = subprocess.run(["mtype", "-i", part, f"::/{name}"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"{name} not on the ESP: {res.stderr}"
    return res.stdout


def boot_uefi(
    disk: Path, workdir: Path, until: re.Pattern[str], timeout: float, tftp: Path | None = None
) -> str:
    """Boot ``disk`` in one QEMU VM (TCG, OVMF with a fresh NVRAM) until the console matches
    ``until`` or ``timeout`` passes; returns the console text.

    Without ``tftp`` the VM has no NIC. With it, a virtio NIC boots first (QEMU's iPXE ROM, as in
    the lab) from QEMU's user-mode network, whose built-in DHCP/TFTP serve ``tftp/node.ipxe``;
    QEMU then runs in a network namespace of its own (``unshare --net``), so no address of it is
    reachable from anywhere else, and ``restrict=on`` keeps the guest off the outside anyway."""
    # The lab's own UEFI firmware options (qemu.py): OVMF, a private NVRAM, its runtime knobs.
    spec = QemuSpec("uefi-test", "", "", MAC, "", "", str(workdir), (Disk(str(disk), 1),))
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_uefi_vars(spec)
    firmware, net_index, disk_index = firmware_argv(spec, BootSetting("pxe" if tftp else "disk", True, True))
    console = workdir / "console.log"
    console.write_bytes(b"")
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "512", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", *firmware,
        "-drive", f"file={disk},if=none,id=disk0,format=raw,cache=unsafe",
        "-device", f"virtio-blk-pci,drive=disk0,bootindex={disk_index}",
        "-chardev", f"file,id=console,path={console}", "-serial", "chardev:console",
    ]  # fmt: skip
    if tftp is not None:
        argv = [
            "unshare", "--net", "--", *argv,
            "-netdev", f"user,id=net0,restrict=on,tftp={tftp},bootfile=node.ipxe",
            "-device", f"virtio-net-pci,netdev=net0,mac={MAC},bootindex={net_index}",
        ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if until.search(console.read_text(errors="replace")):
                break
            time.sleep(1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    text = console.read_text(errors="replace")
    assert proc.returncode in (0, -signal.SIGKILL), f"QEMU failed: {err.decode(errors='replace')[-500:]}"
    return text


def test_loader_entry_carries_the_installed_command_line() -> None:
    files = platform.loader_files(CMDLINE)
    assert files["loader/loader.conf"].splitlines() == ["default standin.conf", "timeout 0", "editor no"]
    entry = files["loader/entries/standin.conf"].splitlines()
    assert "linux /standin/vmlinuz" in entry and "initrd /standin/initramfs.zst" in entry
    assert "options talos.platform=metal console=ttyS0 standin.boot=disk" in entry


def test_esp_size_leaves_room_for_a_second_kernel_and_initramfs() -> None:
    assert platform.esp_size_mib(platform.BootFiles(b"k" * platform.MIB, b"i" * 8 * platform.MIB)) == 128
    big = platform.BootFiles(b"k" * 10 * platform.MIB, b"i" * 90 * platform.MIB)
    assert platform.esp_size_mib(big) == 216


def test_firmware_decides_uefi_unless_told() -> None:
    assert platform.VMPlatform(uefi=True).booted_uefi() is True
    assert platform.VMPlatform(uefi=False).booted_uefi() is False
    assert platform.VMPlatform().booted_uefi() is os.path.isdir("/sys/firmware/efi")


def test_fill_esp_without_a_loader_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(platform.PlatformError, match=re.escape("no UEFI boot loader at /x/bootx64.efi")):
        platform.fill_esp(str(tmp_path / "esp"), "/x/bootx64.efi", platform.BootFiles(b"", b""), {})


def install_uefi_disk(tmp_path: Path, boot_inputs: dict[str, Path]) -> Path:
    """A raw disk image holding what ``VMPlatform.install`` writes on a UEFI machine, checked
    on the way (GPT, ESP contents, the private config, ``find_installed`` on partition 2)."""
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as fh:
        fh.truncate(DISK_MIB * platform.MIB)
    mnt = tmp_path / "mnt"
    boot = platform.BootFiles(boot_inputs["kernel"].read_bytes(), boot_inputs["initrd"].read_bytes())
    config = b"version: v1alpha1\nmachine:\n  type: worker\n"

    with loop_device(disk) as dev:
        vm = platform.VMPlatform(
            mountpoint=mnt, uefi=True, efi_loader=str(boot_inputs["loader"]), extra_disks=(dev,)
        )
        try:
            root = vm.install(dev, config, boot, CMDLINE)
            assert root == mnt
            assert (root / platform.CONFIG_NAME).read_bytes() == config
            assert stat.S_IMODE((root / platform.CONFIG_NAME).stat().st_mode) == 0o600
            _umount(mnt)
            # The agent finds the installed system on partition 2 (after the ESP) by its label.
            assert vm.find_installed() == mnt
            _umount(mnt)
            table = subprocess.run(["sfdisk", "-d", dev], capture_output=True, text=True, check=True).stdout
            assert "label: gpt" in table
            assert "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in table  # partition 1: the ESP
            esp = f"{dev}p1"
            entry = _esp_file(esp, f"loader/entries/{platform.LOADER_ENTRY}")
            assert "options talos.platform=metal console=ttyS0 standin.boot=disk\n" in entry
            assert "timeout 0" in _esp_file(esp, "loader/loader.conf")
        finally:
            _umount(mnt)
    return disk


@pytest.mark.lab
def test_uefi_install_boots_from_disk_in_ovmf_and_wipe_removes_it(
    tmp_path: Path, boot_inputs: dict[str, Path]
) -> None:
    disk = install_uefi_disk(tmp_path, boot_inputs)
    mnt = tmp_path / "mnt"
    console = boot_uefi(disk, tmp_path / "vm1", INIT_LINE, BOOT_TIMEOUT)
    init = INIT_LINE.search(console)
    assert init is not None, f"the stand-in's /init never ran from the disk; console tail:\n{console[-3000:]}"
    # OVMF found the ESP's removable-media loader on the virtio disk, and started it.
    assert re.search(r"BdsDxe: starting Boot\w+ .*PciRoot\(0x0\)/Pci\(0x\w+,0x0\)", console), console[:3000]
    # The kernel runs with the loader entry's command line: network-only arguments dropped.
    cmdline = re.search(r"Command line: (.*)", console)
    assert cmdline is not None and "standin.boot=disk" in cmdline.group(1).split()
    assert "talos.config" not in cmdline.group(1)
    assert init_cmdline(console, init) == cmdline.group(1).split()
    assert 'BdsDxe: starting Boot0001 "UEFI Misc Device"' in console  # the virtio disk, nothing else

    with loop_device(disk) as dev:
        vm = platform.VMPlatform(mountpoint=mnt, uefi=True, extra_disks=(dev,))
        vm.wipe(dev)
        assert vm.find_installed() is None
        assert subprocess.run(["sfdisk", "-d", dev], capture_output=True).returncode != 0  # no table left
        assert not os.path.exists(f"{dev}p1")
    # A reset node's firmware finds nothing to boot on the disk and moves on (to the network in the lab).
    console = boot_uefi(disk, tmp_path / "vm2", PAST_DISK, BOOT_TIMEOUT)
    assert PAST_DISK.search(console), console[-3000:]
    assert re.search(r'BdsDxe: failed to load Boot\w+ "UEFI Misc Device".*Not Found', console)
    assert "EFI stub" not in console and "talos stand-in" not in console


@pytest.mark.lab
def test_installed_uefi_node_told_to_boot_from_disk_exits_ipxe_to_the_installed_loader(
    tmp_path: Path, boot_inputs: dict[str, Path]
) -> None:
    """The lab's "installed -> boot from disk" path on UEFI: network first (as a BMC that keeps PXE
    first leaves it), iPXE gets the tool's own local-disk script, ``exit`` returns to OVMF, which
    goes on to the disk and its systemd-boot."""
    disk = install_uefi_disk(tmp_path, boot_inputs)
    node = Node.model_validate(
        {
            "name": "w1",
            "rack": "r2",
            "role": "worker",
            "boot": {"mode": "uefi", "mac": MAC},
            "ip": "192.168.78.131",
        }
    )
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    (tftp / "node.ipxe").write_text(ipxe.local_disk_script(node))
    console = boot_uefi(disk, tmp_path / "vm", INIT_LINE, BOOT_TIMEOUT, tftp=tftp)
    said = console.find("provisioner: w1 is installed, booting from the local disk")
    assert said >= 0, f"iPXE never ran the local-disk script; console tail:\n{console[-3000:]}"
    after = console[said:]
    started = re.search(r'BdsDxe: starting Boot\w+ "UEFI Misc Device"', after)
    assert started is not None, f"OVMF did not go on to the disk after iPXE's exit:\n{after[-3000:]}"
    # Straight on: OVMF's own PXE/HTTP boot options (minutes of TCG timeouts) are off in the lab.
    assert not re.search(r"Start (PXE|HTTP Boot) over IPv[46]", after[: started.start()])
    init = INIT_LINE.search(after, started.end())
    assert init is not None and "standin.boot=disk" in init_cmdline(after, init), after[-3000:]
