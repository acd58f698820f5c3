"""A QEMU virtual machine behind the ``Machine`` protocol: what a lab BMC really powers.

Power on starts ``qemu-system-x86_64 -accel tcg`` inside the lab namespace on the node's
tap, with the inventory's MAC, SMBIOS UUID and serial; power off stops the process (hard)
or presses the ACPI power button over QMP (soft). QEMU runs with ``-no-reboot``: when the
guest reboots, the process exits and a watcher starts it again with the boot device the
BMC holds *now*, so a persistent change made while the VM runs takes effect at the next
reboot, exactly as on a real server, and a one-time override is consumed by one boot.

The BMC's EFI boot flag chooses the firmware of each start: legacy BIOS (QEMU's SeaBIOS,
``-boot`` order) or UEFI (OVMF from Debian's ``ovmf``, a private copy of its variable store
per VM, boot order by ``bootindex``), so a BMC that sets the flag wrongly really breaks the boot.
Under OVMF the NIC boots only through its iPXE option ROM (OVMF's own PXE/HTTP boot is switched off),
so an installed node's iPXE ``exit`` goes straight on to the disk's ESP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .machine import BootSelection, BootSetting, BootTarget, MachineIdentity, MachineSpec
from .netns import exec_argv

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")  # Debian package ovmf
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")  # template; each VM writes its own copy
# OVMF's own network stack off (runtime knobs, OvmfPkg/RUNTIME_CONFIG.md): otherwise it adds PXEv4,
# PXEv6, HTTPv4 and HTTPv6 boot options for the NIC, all ordered before the disk, and an installed
# node whose iPXE (the NIC's option ROM, own stack, unaffected) exits to the firmware spends over a
# minute of TCG timeouts in them before it reaches its disk (tests/standin/test_uefi_disk.py).
OVMF_NO_NATIVE_NETBOOT = (
    "-fw_cfg",
    "name=opt/org.tianocore/IPv4Support,string=no",
    "-fw_cfg",
    "name=opt/org.tianocore/IPv6Support,string=no",
)


@dataclass(frozen=True)
class Disk:
    path: str
    size_gib: int


@dataclass(frozen=True)
class QemuSpec:
    """Everything needed to (re)start one VM; stored as JSON in the VM's directory."""

    name: str
    namespace: str
    tap: str
    mac: str
    uuid: str
    serial: str
    workdir: str
    disks: tuple[Disk, ...]  # in guest order: /dev/vda, /dev/vdb, ...
    memory_mib: int = 1536
    cpus: int = 1
    nic_model: str = "virtio-net-pci"

    @property
    def dir(self) -> Path:
        return Path(self.workdir)

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def qmp_socket(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def events_socket(self) -> Path:
        return self.dir / "qmp-events.sock"

    @property
    def pid_file(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def uefi_vars(self) -> Path:
        """The VM's own UEFI variable store (boot entries survive its reboots, like NVRAM)."""
        return self.dir / "OVMF_VARS.fd"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "vm.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> QemuSpec:
        data = json.loads(Path(path).read_text())
        data["disks"] = tuple(Disk(**d) for d in data["disks"])
        return cls(**data)


def create_disks(spec: QemuSpec) -> None:
    """Blank qcow2 disks (sparse: a 16 GiB disk costs nothing until written)."""
    for d in spec.disks:
        if not Path(d.path).exists():
            res = subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", d.path, f"{d.size_gib}G"],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                raise RuntimeError(f"qemu-img create {d.path}: {res.stderr.strip()}")


def boot_order(setting: BootSetting) -> str:
    """QEMU ``-boot`` value for a BMC boot setting.

    A blank install disk must fall through to the network (order c then n), as a real
    server's BIOS does; persistent PXE puts the network first and the disk second.
    """
    if setting.device == "pxe":
        return "order=nc" if setting.persistent else "once=n,order=cn"
    return "order=cn"


def ensure_uefi_vars(spec: QemuSpec) -> None:
    """Copy OVMF's variable-store template for this VM once (its NVRAM)."""
    if not OVMF_CODE.is_file() or not OVMF_VARS.is_file():
        raise RuntimeError(f"{OVMF_CODE} or {OVMF_VARS} is missing: install Debian's ovmf (scripts/setup.sh)")
    if not spec.uefi_vars.exists():
        tmp = spec.uefi_vars.with_suffix(".tmp")
        shutil.copyfile(OVMF_VARS, tmp)
        os.replace(tmp, spec.uefi_vars)


def firmware_argv(spec: QemuSpec, setting: BootSetting) -> tuple[list[str], str | None, str | None]:
    """Firmware options plus the NIC's and the first disk's ``bootindex`` (UEFI only).

    SeaBIOS follows ``-boot``; OVMF follows the ``bootindex`` order QEMU hands it, and falls
    through to the next entry when one fails (a blank disk, or iPXE's ``exit``), as the BIOS
    order does."""
    if not setting.uefi:
        return ["-boot", boot_order(setting)], None, None
    argv = [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={spec.uefi_vars}",
        *OVMF_NO_NATIVE_NETBOOT,
    ]
    if setting.device == "pxe":
        return argv, "1", "2"
    return argv, "2", "1"


def qemu_argv(spec: QemuSpec, setting: BootSetting) -> list[str]:
    """The QEMU command line for one start of the VM."""
    firmware, net_index, disk_index = firmware_argv(spec, setting)
    nic = f"{spec.nic_model},netdev=net0,mac={spec.mac}" + (f",bootindex={net_index}" if net_index else "")
    argv = [
        QEMU,
        "-accel",
        "tcg",
        "-name",
        f"pvlab-{spec.name},process=pvlab-{spec.name}",
        "-machine",
        "pc",
        "-m",
        str(spec.memory_mib),
        "-smp",
        str(spec.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-uuid",
        spec.uuid,
        "-smbios",
        f"type=1,manufacturer=Provisioner Lab,product=QEMU stand-in node,uuid={spec.uuid},"
        f"serial={spec.serial}",
        "-netdev",
        f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
        "-device",
        nic,
        "-device",
        "virtio-rng-pci",
        "-chardev",
        f"file,id=console,path={spec.console_log},append=on",
        "-serial",
        "chardev:console",
        "-qmp",
        f"unix:{spec.qmp_socket},server=on,wait=off",
        "-qmp",
        f"unix:{spec.events_socket},server=on,wait=off",
        *firmware,
    ]
    for i, d in enumerate(spec.disks):
        index = f",bootindex={disk_index}" if disk_index and i == 0 else ""
        argv += [
            "-drive",
            f"file={d.path},if=none,id=disk{i},format=qcow2,cache=unsafe,discard=unmap",
            "-device",
            f"virtio-blk-pci,drive=disk{i},serial={spec.serial}-{i}{index}",
        ]
    return argv


class Qmp:
    """A minimal QMP client (JSON lines over a Unix socket)."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise EOFError("QMP connection closed")
        return json.loads(line)  # type: ignore[no-any-return]

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error'].get('desc')}")

    def events(self) -> Any:
        """Yield events until the connection closes (QEMU exited)."""
        self.sock.settimeout(None)
        while True:
            try:
                msg = self._read()
            except (EOFError, OSError, ValueError):
                return
            if "event" in msg:
                yield msg

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


@dataclass
class QemuMachine:
    """``Machine`` implementation backed by a QEMU process in the lab namespace."""

    spec: QemuSpec
    boot: BootSelection = field(
        default_factory=lambda: BootSelection(BootSetting(device="disk", persistent=True, uefi=False))
    )

    def __post_init__(self) -> None:
        self.name = self.spec.name
        self.identity = MachineIdentity(
            self.spec.uuid, self.spec.serial, "Provisioner Lab", "QEMU stand-in node", (self.spec.mac,)
        )
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._wanted_on = False  # False once the BMC (not the guest) powered the VM off
        self.boots: list[dict[str, Any]] = []
        self.spec.save()
        create_disks(self.spec)
        self._write_status()

    # -- Machine protocol ------------------------------------------------------------
    def power_state(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def power_on(self) -> None:
        with self._lock:
            self._wanted_on = True
            if not self.power_state():
                self._start()

    def power_off(self, hard: bool) -> None:
        with self._lock:
            if not self.power_state():
                self._wanted_on = False
                return
            if not hard:
                # ACPI power button: the guest decides; QEMU exits when it powers off.
                try:
                    self._qmp("system_powerdown")
                except (OSError, RuntimeError, EOFError) as exc:
                    log.warning("%s: ACPI power-down failed: %s", self.name, exc)
                return
            self._wanted_on = False
            self._stop()

    def reset(self) -> None:
        """Hard reset: the next boot uses the boot device held now (a restart of the process)."""
        with self._lock:
            self._wanted_on = True
            if self.power_state():
                self._stop()
            self._start()

    def boot_device(self) -> BootSetting:
        with self._lock:
            return self.boot.current()

    def set_boot_device(self, device: BootTarget, persistent: bool, uefi: bool) -> None:
        with self._lock:
            self.boot.set(device, persistent, uefi)
            self._write_status()

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "name": self.name,
                "powered": self.power_state(),
                "pid": self._proc.pid if self.power_state() and self._proc else None,
                "boot": self.boot.as_dict(),
                "boots": list(self.boots),
            }

    # -- process handling -------------------------------------------------------------
    def _start(self) -> None:
        setting = self.boot.take_for_boot()
        if setting.uefi:
            ensure_uefi_vars(self.spec)
        for sock in (self.spec.qmp_socket, self.spec.events_socket):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
        qemu = qemu_argv(self.spec, setting)
        argv = exec_argv(self.spec.namespace, qemu)
        with open(self.spec.console_log, "ab") as fh:
            fh.write(
                f"\n=== pvlab: power on {time.strftime('%H:%M:%S')} boot {boot_order(setting)} "
                f"{'uefi' if setting.uefi else 'bios'} ===\n".encode()
            )
        stderr = open(self.spec.dir / "qemu.stderr", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True
        )
        stderr.close()
        self._proc = proc
        self.spec.pid_file.write_text(f"{proc.pid}\n")
        self.boots.append(
            {
                "device": setting.device,
                "persistent": setting.persistent,
                "uefi": setting.uefi,
                "time": time.time(),
                # What this boot was started with: the process itself may be gone by the time a
                # reader looks (a guest reboot ends it under -no-reboot, and a new one starts).
                "cmdline": " ".join(qemu),
            }
        )
        self._write_status()
        threading.Thread(
            target=self._watch, args=(proc,), name=f"qemu-watch-{self.name}", daemon=True
        ).start()
        log.info("%s: QEMU started (pid %d, boot %s)", self.name, proc.pid, boot_order(setting))

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Follow one QEMU process: a guest reboot (QEMU exits under -no-reboot) restarts it."""
        reason = None
        deadline = time.monotonic() + 10
        qmp = None
        while qmp is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                qmp = Qmp(self.spec.events_socket)
            except OSError:
                time.sleep(0.1)
        if qmp is not None:
            for ev in qmp.events():
                if ev["event"] == "SHUTDOWN":
                    reason = ev.get("data", {}).get("reason")
            qmp.close()
        rc = proc.wait()
        with self._lock:
            if self._proc is not proc:
                return
            self.spec.pid_file.unlink(missing_ok=True)
            if reason == "guest-reset" and self._wanted_on:
                log.info("%s: guest rebooted; starting QEMU again", self.name)
                self._start()
                return
            log.info("%s: QEMU exited (status %s, reason %s)", self.name, rc, reason)
            self._write_status()

    def _qmp(self, command: str) -> Any:
        q = Qmp(self.spec.qmp_socket)
        try:
            return q.execute(command)
        finally:
            q.close()

    def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        with contextlib.suppress(OSError, RuntimeError, EOFError):
            self._qmp("quit")
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        self.spec.pid_file.unlink(missing_ok=True)
        self._write_status()

    def _write_status(self) -> None:
        with contextlib.suppress(OSError):
            tmp = self.spec.dir / ".status.json.tmp"
            tmp.write_text(json.dumps(self.snapshot(), indent=1))
            os.replace(tmp, self.spec.dir / "status.json")

    def shutdown(self) -> None:
        """Stop the VM for good (lab teardown); no restart on the way out."""
        with self._lock:
            self._wanted_on = False
            self._stop()


def machine_from_spec(vms_dir: str, spec: MachineSpec) -> QemuMachine:
    """Machine factory for the BMC fleet (``functools.partial(machine_from_spec, dir)``):
    the VM's full description was written by ``lab up`` to ``<vms_dir>/<name>/vm.json``."""
    qspec = QemuSpec.load(Path(vms_dir) / spec.name / "vm.json")
    return QemuMachine(qspec, BootSelection(spec.boot))
