"""Maintenance mode's backend and the install it triggers.

A blank node waits here for ApplyConfiguration (apid checks the config's shape and install disk
first). Accepting a config installs the stand-in to ``machine.install.disk`` (kernel + initramfs +
config + bootloader, platform.py) and reboots into configured mode, as Talos's installer does. The
same ``install_and_reboot`` serves a config fetched from ``talos.config=``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import bootflow
from . import config as machineconfig
from .backend import (
    ApplyMode,
    ApplyResult,
    EtcdMember,
    InvalidConfig,
    PreconditionFailed,
    ServiceStatus,
    VersionInfo,
    WipeMode,
)
from .node import version_info
from .platform import INITRD_NAME, KERNEL_NAME, BootFiles, Platform

log = logging.getLogger("standin.maintenance")


def boot_source(local_dir: Path, cmdline: dict[str, str]) -> str | None:
    """Where the kernel + initramfs to install come from, or None if this boot offers none."""
    if (local_dir / KERNEL_NAME).is_file() and (local_dir / INITRD_NAME).is_file():
        return str(local_dir)
    if cmdline.get(bootflow.ARG_KERNEL) and cmdline.get(bootflow.ARG_INITRD):
        return cmdline[bootflow.ARG_KERNEL]
    return None


def load_boot_files(local_dir: Path, cmdline: dict[str, str], policy: bootflow.FetchPolicy) -> BootFiles:
    """Read the local copies, else download the netboot service's copies (same retry budget as the config)."""
    if (local_dir / KERNEL_NAME).is_file() and (local_dir / INITRD_NAME).is_file():
        return BootFiles((local_dir / KERNEL_NAME).read_bytes(), (local_dir / INITRD_NAME).read_bytes())
    kernel_url, initrd_url = cmdline.get(bootflow.ARG_KERNEL), cmdline.get(bootflow.ARG_INITRD)
    if not kernel_url or not initrd_url:
        raise PreconditionFailed(
            f"nothing to install from: no {local_dir} and no "
            f"{bootflow.ARG_KERNEL}=/{bootflow.ARG_INITRD}= kernel args"
        )
    return BootFiles(bootflow.fetch(kernel_url, policy), bootflow.fetch(initrd_url, policy))


class Installer:
    """Install a config to disk and reboot; shared by maintenance apply and the talos.config boot."""

    def __init__(
        self,
        platform: Platform,
        cmdline: dict[str, str],
        boot_dir: Path,
        policy: bootflow.FetchPolicy,
        reboot: Callable[[], None],
        action_delay: float,
    ) -> None:
        self.platform = platform
        self.cmdline = cmdline
        self.boot_dir = boot_dir
        self.policy = policy
        self.reboot = reboot
        self.action_delay = action_delay
        self._busy = threading.Lock()

    def check(self, data: bytes) -> str:
        """Validate what install needs; returns the install disk. Raises InvalidConfig/PreconditionFailed."""
        cfg = machineconfig.parse(data)
        if cfg.install_disk is None:
            raise InvalidConfig("machine config: machine.install.disk is missing (nothing to install to)")
        if cfg.install_disk not in self.platform.disks():
            raise InvalidConfig(f"machine.install.disk {cfg.install_disk!r} does not exist on this machine")
        if boot_source(self.boot_dir, self.cmdline) is None:
            raise PreconditionFailed(
                f"nothing to install from: no {self.boot_dir} and no {bootflow.ARG_KERNEL}= kernel argument"
            )
        return cfg.install_disk

    def install_and_reboot(self, disk: str, data: bytes) -> bool:
        """Blocking: install, then reboot (at least ``action_delay`` after being called). False on failure."""
        if not self._busy.acquire(blocking=False):
            log.warning("talos stand-in: an install is already running; ignoring another config")
            return False
        started = time.monotonic()
        try:
            boot = load_boot_files(self.boot_dir, self.cmdline, self.policy)
            self.platform.install(disk, data, boot, self.cmdline)
            log.info("talos stand-in: installed to %s; rebooting from disk", disk)
            time.sleep(max(0.0, self.action_delay - (time.monotonic() - started)))
            self.reboot()
            return True
        except Exception as exc:
            log.error("talos stand-in: install to %s failed: %s; staying in maintenance mode", disk, exc)
            return False
        finally:
            self._busy.release()


class MaintenanceBackend:
    """Backend of a blank node: Version and ApplyConfiguration only (apid refuses the rest)."""

    def __init__(self, platform: Platform, installer: Installer) -> None:
        self.platform = platform
        self.installer = installer

    def hostname(self) -> str:
        return self.platform.hostname()

    def disks(self) -> list[str]:
        return self.platform.disks()

    def apply_config(self, data: bytes, mode: ApplyMode, dry_run: bool) -> ApplyResult:
        disk = self.installer.check(data)
        # Nothing runs yet in maintenance mode, so every accepted mode means "install, then reboot".
        details = f"install to {disk} and reboot into the configured system"
        if dry_run:
            return ApplyResult(ApplyMode.REBOOT, "dry run: would " + details)
        threading.Thread(
            target=self.installer.install_and_reboot, args=(disk, data), name="install", daemon=True
        ).start()
        log.info("talos stand-in: config applied in maintenance mode (%s): %s", mode.name, details)
        return ApplyResult(ApplyMode.REBOOT, "will " + details)

    def bootstrap(self, recover_etcd: bool) -> None:
        raise PreconditionFailed("bootstrap is not available in maintenance mode")

    def etcd_members(self) -> list[EtcdMember]:
        raise PreconditionFailed("etcd does not run in maintenance mode")

    def services(self) -> list[ServiceStatus]:
        return [ServiceStatus("apid", "Running", healthy=True, health_unknown=False)]

    def kubeconfig(self) -> bytes:
        raise PreconditionFailed("no kubeconfig in maintenance mode")

    def reset(self, graceful: bool, reboot: bool, mode: WipeMode) -> None:
        raise PreconditionFailed("nothing to reset in maintenance mode")

    def version(self) -> VersionInfo:
        return version_info("maintenance")
