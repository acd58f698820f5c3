r"""The hardware side of the stand-in: disks, install, wipe, reboot, addresses, the VIP.

``VMPlatform`` is the real thing inside a lab VM. On a machine that booted through legacy BIOS it
partitions the install disk with sfdisk (MBR, one partition), makes an ext4 file system extlinux
can boot, copies kernel + initramfs + machine config, installs extlinux and its MBR. On a machine
that booted through UEFI (``/sys/firmware/efi``) a BIOS boot sector is useless, so it writes GPT
instead: partition 1 an EFI System Partition (FAT32) with systemd-boot at the removable-media path
``\EFI\BOOT\BOOTX64.EFI`` (what firmware with empty NVRAM boots), a Type #1 loader entry and the
kernel + initramfs (systemd-boot reads only the ESP); partition 2 the same ext4 file system as the
BIOS layout. The ESP is filled with mtools, not a vfat mount, so the same code also runs on a host
whose kernel lacks vfat (the UEFI test builds its disk on a loop device). Reboot is ``reboot -f``.
``DirPlatform`` is the host-test stand-in for a machine: each "disk" is a directory, reboot
restarts the agent loop in-process, addresses are given (127.0.0.x). Both keep the same layout of
the labelled ext4 partition so the agent code is identical:

    <partition root>/boot/vmlinuz, /boot/initramfs.zst, /boot/extlinux.conf   (VM, BIOS only)
    <partition root>/config.yaml                                              (mode 0600)
    <partition root>/var/etcd/                                                (etcd data dir)
    ESP: /EFI/BOOT/BOOTX64.EFI, /loader/loader.conf, /loader/entries/standin.conf,
         /standin/vmlinuz, /standin/initramfs.zst                            (VM, UEFI only)

Standard library only (runs in the initramfs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from .bootflow import Identity, read_identity

log = logging.getLogger("standin.platform")

# File-system label that marks an installed stand-in (found by scanning disks at boot, as
# Talos finds its STATE partition by label).
FS_LABEL = "STANDIN"
# Where boot files to install may be placed locally (e.g. by /init or a test); else URLs from
# the kernel arguments standin.kernel= / standin.initrd= are downloaded.
BOOT_FILES_DIR = Path("/run/standin/boot")
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initramfs.zst"
CONFIG_NAME = "config.yaml"
# Debian's extlinux package (paths as unpacked into the image by provisioner/lab/image.py).
EXTLINUX = "/usr/bin/extlinux"
MBR_CANDIDATES = ("/usr/lib/EXTLINUX/mbr.bin", "/usr/lib/syslinux/mbr/mbr.bin")
# extlinux 6.04 reads ext4 but not every feature mke2fs enables by default.
MKE2FS_FEATURES = "^64bit,^metadata_csum,^orphan_file"
# UEFI install (Debian's systemd-boot-efi and mtools, unpacked into the image by image.py).
EFI_SYSFS = "/sys/firmware/efi"  # exists only when the running kernel was started by UEFI firmware
SYSTEMD_BOOT_EFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
EFI_REMOVABLE_PATH = "EFI/BOOT/BOOTX64.EFI"  # the default loader path firmware tries on any ESP
ESP_LABEL = "STANDIN_ESP"  # FAT labels: at most 11 characters
ESP_MIN_MIB = 128
ESP_BOOT_DIR = "standin"  # kernel and initramfs on the ESP
LOADER_ENTRY = "standin.conf"
# Kernel args that only make sense for a network boot; dropped from the installed APPEND line.
_NETBOOT_ONLY = (
    "talos.config",
    "standin.kernel",
    "standin.initrd",
    "standin.ramdisk",
    "standin.boot",
    "initrd",
    "BOOT_IMAGE",
)

MIB = 1024 * 1024


class PlatformError(Exception):
    """Install/wipe failed; the message names the step and the disk (never config content)."""


@dataclass(frozen=True)
class BootFiles:
    """Kernel and initramfs to install (bytes: fetched or read before the disk is touched)."""

    kernel: bytes
    initrd: bytes


@runtime_checkable
class Platform(Protocol):
    """What the agent needs from the machine it runs on."""

    name: str

    def hostname(self) -> str: ...

    def identity(self) -> Identity:
        """SMBIOS UUID/serial, boot NIC MAC, hostname: what ``talos.config`` URLs get substituted with."""
        ...

    def addresses(self) -> list[str]: ...

    def disks(self) -> list[str]: ...

    def find_installed(self) -> Path | None:
        """Mount (if needed) and return the installed partition's root, or None on a blank machine."""
        ...

    def install(self, disk: str, config: bytes, boot: BootFiles, cmdline: dict[str, str]) -> Path:
        """Partition and fill ``disk``; returns the (mounted) partition root."""
        ...

    def wipe(self, disk: str) -> None: ...

    def reboot(self) -> None: ...

    def halt(self) -> None:
        """Power off (Reset without reboot)."""
        ...

    def claim_vip(self, vip: str, ports: list[int]) -> None:
        """Make ``vip`` reach this node (``ports``: what must answer there: etcd client, trustd)."""
        ...

    def release_vip(self, vip: str) -> None: ...


def write_private(path: Path, data: bytes) -> None:
    """Atomic 0600 write: the machine config holds the cluster's CA keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def disk_append_line(cmdline: dict[str, str]) -> str:
    """The APPEND line for the installed boot: the netboot args minus network-only ones, plus the
    ``standin.boot=disk`` marker (the agent and the console log show where the node booted from)."""
    words = [k if v == "" else f"{k}={v}" for k, v in cmdline.items() if k not in _NETBOOT_ONLY]
    return " ".join([*words, "standin.boot=disk"])


def esp_size_mib(boot: BootFiles) -> int:
    """ESP size: at least ``ESP_MIN_MIB``, and always room for a second kernel + initramfs pair
    (an initramfs that outgrows a fixed size must not break the install)."""
    need = 2 * (len(boot.kernel) + len(boot.initrd)) // MIB + 16
    return max(ESP_MIN_MIB, need)


def loader_files(cmdline: dict[str, str]) -> dict[str, str]:
    """systemd-boot's configuration: ``timeout 0`` boots the one Type #1 entry at once, its
    ``options`` are the APPEND line the BIOS path writes to extlinux.conf."""
    return {
        "loader/loader.conf": f"default {LOADER_ENTRY}\ntimeout 0\neditor no\n",
        f"loader/entries/{LOADER_ENTRY}": (
            "title Talos stand-in (installed)\n"
            f"linux /{ESP_BOOT_DIR}/{KERNEL_NAME}\n"
            f"initrd /{ESP_BOOT_DIR}/{INITRD_NAME}\n"
            f"options {disk_append_line(cmdline)}\n"
        ),
    }


def fill_esp(part: str, loader: str, boot: BootFiles, cmdline: dict[str, str]) -> None:
    """Make a FAT32 file system on ``part`` and copy the loader, its entry, kernel and initramfs
    onto it with mtools (no vfat mount: works where the running kernel has no vfat)."""
    if not os.path.isfile(loader):
        raise PlatformError(f"no UEFI boot loader at {loader} (systemd-boot-efi missing from the image?)")
    _run(["mkfs.vfat", "-F", "32", "-n", ESP_LABEL, part], f"mkfs.vfat {part}")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    dirs = ["EFI", "EFI/BOOT", "loader", "loader/entries", ESP_BOOT_DIR]
    _run(["mmd", "-i", part, *(f"::/{d}" for d in dirs)], f"mmd on the ESP {part}", env=env)
    with tempfile.TemporaryDirectory(prefix="standin-esp-") as tmp:
        files: dict[str, str] = {EFI_REMOVABLE_PATH: loader}
        staged = {
            f"{ESP_BOOT_DIR}/{KERNEL_NAME}": boot.kernel,
            f"{ESP_BOOT_DIR}/{INITRD_NAME}": boot.initrd,
            **{k: v.encode() for k, v in loader_files(cmdline).items()},
        }
        for i, (dest, data) in enumerate(staged.items()):
            staged_file = Path(tmp) / str(i)
            staged_file.write_bytes(data)
            files[dest] = str(staged_file)
        for dest, src in files.items():
            _run(["mcopy", "-o", "-i", part, src, f"::/{dest}"], f"mcopy {dest} to the ESP {part}", env=env)


def _run(cmd: list[str], what: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).decode(errors="replace").strip().splitlines()[-3:]
        raise PlatformError(f"{what}: {cmd[0]} failed (status {res.returncode}): {' | '.join(tail)}")
    return res.stdout.decode(errors="replace")


def _wait_device(disk: str, part: str, timeout: float = 10.0) -> None:
    """Wait for the kernel to know ``part`` after repartitioning, and make sure its /dev node exists
    (devtmpfs normally creates it; without a hotplug helper a missing node is made from sysfs)."""
    sysfs = Path("/sys/class/block") / Path(part).name
    deadline = time.monotonic() + timeout
    tries = 0
    while not (sysfs.exists() or os.path.exists(part)):
        if time.monotonic() > deadline:
            raise PlatformError(f"partition {part} did not appear after partitioning {disk}")
        tries += 1
        if tries % 10 == 1:  # nudge the kernel: re-read the table (blockdev), else add partitions (partx)
            for nudge in (["blockdev", "--rereadpt", disk], ["partx", "-a", disk]):
                with contextlib.suppress(OSError):  # partx is not in the image; blockdev is busybox's
                    subprocess.run(nudge, capture_output=True)
        time.sleep(0.1)
    if not os.path.exists(part):
        major, minor = (int(x) for x in (sysfs / "dev").read_text().split(":"))
        os.mknod(part, 0o600 | stat.S_IFBLK, os.makedev(major, minor))


def _partition_starts(disk: str) -> list[int]:
    """Byte offsets of the partitions the kernel currently has for ``disk`` (from sysfs)."""
    base = Path("/sys/class/block") / Path(disk).name
    starts = []
    for start in base.glob("*/start"):
        with contextlib.suppress(OSError, ValueError):
            starts.append(int(start.read_text()) * 512)
    return sorted(starts)


def _ext4_label(device: str) -> str:
    """Volume label from an ext2/3/4 superblock (offset 1024; magic at +56, label at +120)."""
    try:
        with open(device, "rb") as fh:
            fh.seek(1024)
            sb = fh.read(256)
    except OSError:
        return ""
    if len(sb) < 136 or sb[56:58] != b"\x53\xef":
        return ""
    return sb[120:136].split(b"\0", 1)[0].decode(errors="replace")


@dataclass
class VMPlatform:
    """A lab VM: virtio disks, the NIC /init configured by DHCP, real reboot.

    ``uefi`` None means "as this machine booted" (``/sys/firmware/efi``); a host test sets it, and
    ``extra_disks`` (a loop device: /sys/block listing skips those) and ``efi_loader``, to run the
    same install code on the host."""

    name: str = "vm"
    mountpoint: Path = Path("/run/standin/disk")
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    uefi: bool | None = None
    efi_loader: str = SYSTEMD_BOOT_EFI
    extra_disks: tuple[str, ...] = ()

    def booted_uefi(self) -> bool:
        return self.uefi if self.uefi is not None else os.path.isdir(EFI_SYSFS)

    def hostname(self) -> str:
        return socket.gethostname()

    def identity(self) -> Identity:
        return read_identity(env=self.env)

    def nic(self) -> str:
        return self.env.get("STANDIN_IFACE", "") or next(
            (n for n in sorted(os.listdir("/sys/class/net")) if n != "lo"), "eth0"
        )

    def addresses(self) -> list[str]:
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True
        )
        addrs = [w.split("/")[0] for line in out.stdout.splitlines() for w in line.split()[3:4]]
        return addrs or ([self.env["STANDIN_IP"]] if self.env.get("STANDIN_IP") else [])

    def disks(self) -> list[str]:
        skip = ("loop", "ram", "sr", "zram", "fd", "md", "dm-")
        listed = {f"/dev/{n}" for n in os.listdir("/sys/block") if not n.startswith(skip)}
        return sorted(listed | set(self.extra_disks))

    def _partition(self, disk: str, number: int = 1) -> str:
        base = disk.rsplit("/", 1)[-1]
        return f"{disk}p{number}" if base[-1].isdigit() else f"{disk}{number}"

    def _mounted(self) -> bool:
        with open("/proc/mounts") as fh:
            return any(line.split()[1] == str(self.mountpoint) for line in fh)

    def find_installed(self) -> Path | None:
        if self._mounted():
            return self.mountpoint
        # The labelled ext4 is partition 1 of a BIOS install and partition 2 (after the ESP) of a UEFI one.
        for part in (self._partition(disk, n) for disk in self.disks() for n in (1, 2)):
            if os.path.exists(part) and _ext4_label(part) == FS_LABEL:
                self.mountpoint.mkdir(parents=True, exist_ok=True)
                _run(["mount", "-t", "ext4", part, str(self.mountpoint)], f"mount {part}")
                if (self.mountpoint / CONFIG_NAME).exists():
                    log.info("talos stand-in: installed system found on %s", part)
                    return self.mountpoint
                _run(["umount", str(self.mountpoint)], f"umount {part}")
        return None

    def install(self, disk: str, config: bytes, boot: BootFiles, cmdline: dict[str, str]) -> Path:
        if disk not in self.disks():
            raise PlatformError(f"install disk {disk} does not exist on this machine")
        if self._mounted():
            _run(["umount", str(self.mountpoint)], "unmount the old system")
        self.wipe_signatures(disk)
        uefi = self.booted_uefi()
        # UEFI: GPT with the ESP the firmware boots from, then the stand-in's ext4 over the rest.
        # BIOS: one bootable Linux partition over the whole disk (MBR label: extlinux + mbr.bin boot it).
        table = f"label: gpt\n,{esp_size_mib(boot)}MiB,U\n,,L\n" if uefi else "label: dos\n,,L,*\n"
        _run(["sfdisk", "--quiet", "--wipe", "always", disk], f"partition {disk}", stdin=table.encode())
        part = self._partition(disk, 2 if uefi else 1)
        _wait_device(disk, part)
        if uefi:
            esp = self._partition(disk, 1)
            _wait_device(disk, esp)
            fill_esp(esp, self.efi_loader, boot, cmdline)
        _run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-O", MKE2FS_FEATURES, "-L", FS_LABEL, part], f"mkfs {part}"
        )
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "ext4", part, str(self.mountpoint)], f"mount {part}")
        if uefi:
            write_private(self.mountpoint / CONFIG_NAME, config)
            os.sync()
            log.info("talos stand-in: installed to %s (UEFI: systemd-boot on %s, ext4 %s)", disk, esp, part)
            return self.mountpoint
        bootdir = self.mountpoint / "boot"
        bootdir.mkdir()
        (bootdir / KERNEL_NAME).write_bytes(boot.kernel)
        (bootdir / INITRD_NAME).write_bytes(boot.initrd)
        (bootdir / "extlinux.conf").write_text(
            "DEFAULT standin\nPROMPT 0\nTIMEOUT 0\nLABEL standin\n"
            f"  KERNEL /boot/{KERNEL_NAME}\n  INITRD /boot/{INITRD_NAME}\n"
            f"  APPEND {disk_append_line(cmdline)}\n"
        )
        write_private(self.mountpoint / CONFIG_NAME, config)
        _run([EXTLINUX, "--install", str(bootdir)], f"install extlinux on {part}")
        mbr = next((p for p in MBR_CANDIDATES if os.path.exists(p)), None)
        if mbr is None:
            raise PlatformError("no extlinux mbr.bin in the image")
        with open(mbr, "rb") as src, open(disk, "r+b") as dst:
            dst.write(src.read()[:440])  # boot code only: the partition table after it stays
        os.sync()
        log.info("talos stand-in: installed to %s (extlinux, %s)", disk, part)
        return self.mountpoint

    def wipe_signatures(self, disk: str) -> None:
        """Zero the first MiB of every partition the kernel knows (ext4 superblock, FAT boot sector:
        no stale label for ``find_installed``), the first 4 MiB (MBR/protective MBR, primary GPT) and
        the last MiB (backup GPT): the firmware then finds no ESP and boots from the network."""
        with open(disk, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            zero = bytes(MIB)
            for start in _partition_starts(disk):
                if start + MIB <= size:
                    fh.seek(start)
                    fh.write(zero)
            fh.seek(0)
            for _ in range(min(4, size // MIB)):
                fh.write(zero)
            if size > 5 * MIB:
                fh.seek(size - MIB)
                fh.write(zero)
            fh.flush()
            os.fsync(fh.fileno())

    def wipe(self, disk: str) -> None:
        if self._mounted():
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
        self.wipe_signatures(disk)
        subprocess.run(["blockdev", "--rereadpt", disk], capture_output=True)
        log.info("talos stand-in: wiped %s", disk)

    def reboot(self) -> None:
        log.info("talos stand-in: rebooting")
        os.sync()
        subprocess.run(["reboot", "-f"])

    def halt(self) -> None:
        log.info("talos stand-in: powering off")
        os.sync()
        subprocess.run(["poweroff", "-f"])

    def claim_vip(self, vip: str, ports: list[int]) -> None:
        nic = self.nic()
        res = subprocess.run(["ip", "addr", "add", f"{vip}/32", "dev", nic], capture_output=True, text=True)
        if res.returncode != 0 and "File exists" not in res.stderr:
            raise PlatformError(f"claim VIP {vip} on {nic}: {res.stderr.strip()}")
        subprocess.run(["arping", "-U", "-c", "1", "-I", nic, vip], capture_output=True)
        log.info("talos stand-in: VIP %s claimed on %s", vip, nic)

    def release_vip(self, vip: str) -> None:
        subprocess.run(["ip", "addr", "del", f"{vip}/32", "dev", self.nic()], capture_output=True)


@dataclass
class DirPlatform:
    """Host-test machine: disks are directories under ``root/disks``; reboot restarts the agent loop.

    On loopback every 127.0.0.0/8 address is already local, so "claiming" the VIP cannot be an
    address alias; it is a TCP forwarder from VIP:port to this node's address (a stand-in for the
    alias, started and stopped by the same calls).
    """

    root: Path
    address: str
    host: str = "standin"
    name: str = "dir"
    on_reboot: Callable[[], None] | None = None
    on_halt: Callable[[], None] | None = None
    ident: Identity | None = None
    _forwarders: dict[str, list[socket.socket]] = field(default_factory=dict)

    def hostname(self) -> str:
        return self.host

    def identity(self) -> Identity:
        return self.ident or Identity(uuid="", serial="", mac="", hostname=self.host)

    def addresses(self) -> list[str]:
        return [self.address]

    def disks(self) -> list[str]:
        d = self.root / "disks"
        return sorted(f"/dev/{p.name}" for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def disk_dir(self, disk: str) -> Path:
        return self.root / "disks" / disk.removeprefix("/dev/")

    def find_installed(self) -> Path | None:
        for disk in self.disks():
            part = self.disk_dir(disk)
            if (part / CONFIG_NAME).exists():
                return part
        return None

    def install(self, disk: str, config: bytes, boot: BootFiles, cmdline: dict[str, str]) -> Path:
        if disk not in self.disks():
            raise PlatformError(f"install disk {disk} does not exist on this machine")
        self.wipe(disk)
        part = self.disk_dir(disk)
        (part / "boot").mkdir(parents=True)
        (part / "boot" / KERNEL_NAME).write_bytes(boot.kernel)
        (part / "boot" / INITRD_NAME).write_bytes(boot.initrd)
        (part / "boot" / "extlinux.conf").write_text(f"APPEND {disk_append_line(cmdline)}\n")
        write_private(part / CONFIG_NAME, config)
        return part

    def wipe(self, disk: str) -> None:
        part = self.disk_dir(disk)
        for child in part.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def reboot(self) -> None:
        for vip in list(self._forwarders):
            self.release_vip(vip)
        if self.on_reboot is not None:
            self.on_reboot()

    def halt(self) -> None:
        for vip in list(self._forwarders):
            self.release_vip(vip)
        if self.on_halt is not None:
            self.on_halt()

    def claim_vip(self, vip: str, ports: list[int]) -> None:
        if vip in self._forwarders:
            return
        socks = []
        for port in ports:
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((vip, port))
            srv.listen(16)
            socks.append(srv)
            threading.Thread(target=_forward_loop, args=(srv, (self.address, port)), daemon=True).start()
        self._forwarders[vip] = socks
        log.info("talos stand-in: VIP %s claimed for ports %s (forwarded to %s)", vip, ports, self.address)

    def release_vip(self, vip: str) -> None:
        for srv in self._forwarders.pop(vip, []):
            with contextlib.suppress(OSError):
                srv.shutdown(socket.SHUT_RDWR)
            srv.close()


def _forward_loop(srv: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        try:
            up = socket.create_connection(target, timeout=5)
        except OSError:
            conn.close()
            continue
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
