"""The stand-in OS agent: what Talos's machined does, for the lab.

``python3 -m provisioner.lab.standin.agent [--cmdline FILE] [--platform vm|dir --root DIR ...]``

Each boot: an installed system on a disk wins (configured mode, node.py); else ``talos.config=``
on the kernel command line is fetched (with ``${uuid}`` & co. substituted) and installed; else
maintenance mode waits for ApplyConfiguration. Install and apply-with-reboot end in a reboot: a real
``reboot -f`` in a VM; with ``--platform dir`` (host tests) the loop below simply boots again.

Runs as the initramfs's main program under TCG (Python ~20x slower): heavy modules (grpclib,
cryptography, PyYAML) are imported only by the mode that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import bootflow
from .node import NodeOptions
from .platform import BOOT_FILES_DIR, DirPlatform, Platform, VMPlatform

if TYPE_CHECKING:
    from .maintenance import Installer

log = logging.getLogger("standin.agent")


class _StandinPrefix(logging.Filter):
    """Every console line must say "talos stand-in" so nobody mistakes the lab for real Talos."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "talos stand-in" not in msg:
            record.msg, record.args = f"talos stand-in: {msg}", None
        return True


@dataclass
class AgentOptions:
    """Everything one boot needs besides the platform."""

    cmdline_path: Path
    boot_dir: Path
    node: NodeOptions
    fetch: bootflow.FetchPolicy


class Agent:
    """Runs boots until a halt. One ``boot()`` = one power cycle of the machine."""

    def __init__(self, platform: Platform, opts: AgentOptions) -> None:
        self.platform = platform
        self.opts = opts
        self.halted = False
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _signal(self, halt: bool) -> None:
        """Called from any thread by the platform's reboot/halt (DirPlatform) to end this boot."""
        self.halted = self.halted or halt
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    def reboot(self) -> None:
        self.platform.reboot()

    def halt(self) -> None:
        self.platform.halt()

    async def boot(self) -> None:
        """One boot: pick the mode, serve until the machine reboots."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        if isinstance(self.platform, DirPlatform):
            self.platform.on_reboot = lambda: self._signal(False)
            self.platform.on_halt = lambda: self._signal(True)
        cmdline = bootflow.read_cmdline(self.opts.cmdline_path)
        log.info(
            "talos stand-in: booting (%s platform%s)",
            self.platform.name,
            ", from disk" if cmdline.get(bootflow.ARG_BOOT) == "disk" else "",
        )
        root = await asyncio.to_thread(self.platform.find_installed)
        if root is not None:
            await self._configured(root)
            return
        url = bootflow.config_url(cmdline)
        if url is not None and await self._from_config_source(url, cmdline):
            await self._event.wait()
            return
        await self._maintenance(cmdline)

    def _installer(self, cmdline: dict[str, str]) -> Installer:
        from .maintenance import Installer

        return Installer(
            self.platform,
            cmdline,
            self.opts.boot_dir,
            self.opts.fetch,
            self.reboot,
            self.opts.node.action_delay,
        )

    async def _from_config_source(self, url: str, cmdline: dict[str, str]) -> bool:
        """Fetch the config named by talos.config and install it; False -> fall back to maintenance."""
        from .apid import check_config
        from .backend import BackendError

        target = bootflow.expand_config_url(url, self.platform.identity())
        try:
            data = await asyncio.to_thread(bootflow.fetch, target, self.opts.fetch)
        except bootflow.ConfigFetchError as exc:
            log.error("talos stand-in: %s; entering maintenance mode", exc)
            return False
        problem = check_config(data, self.platform.disks())
        installer = self._installer(cmdline)
        try:
            if problem is not None:
                raise BackendError(problem)
            disk = installer.check(data)
        except BackendError as exc:
            log.error("talos stand-in: config from %s refused: %s; entering maintenance mode", target, exc)
            return False
        return await asyncio.to_thread(installer.install_and_reboot, disk, data)

    async def _maintenance(self, cmdline: dict[str, str]) -> None:
        from . import apid
        from .maintenance import MaintenanceBackend

        installer = self._installer(cmdline)
        assert self._event is not None
        host = "0.0.0.0" if self.opts.node.listen_any else self.platform.addresses()[0]
        server = await apid.serve_maintenance(
            host, self.opts.node.apid_port, MaintenanceBackend(self.platform, installer)
        )
        try:
            await self._event.wait()
        finally:
            await server.stop()

    async def _configured(self, root: Path) -> None:
        from . import config as machineconfig
        from .backend import BackendError
        from .node import ConfiguredNode
        from .platform import CONFIG_NAME

        assert self._event is not None
        try:
            cfg = machineconfig.parse((root / CONFIG_NAME).read_bytes())
        except (OSError, BackendError) as exc:
            log.error("talos stand-in: installed config unusable: %s; waiting (reset the node)", exc)
            await self._event.wait()
            return
        node = ConfiguredNode(self.platform, root, cfg, self.opts.node, self.reboot, self.halt)
        try:
            await node.start()
            await self._event.wait()
        finally:
            await node.stop()

    def run(self) -> int:
        """Boot again after every reboot until a halt (VM reboots never come back here)."""
        while not self.halted:
            asyncio.run(self.boot())
        log.info("talos stand-in: halted")
        return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 -m provisioner.lab.standin.agent", description=__doc__)
    ap.add_argument("--cmdline", type=Path, default=Path("/proc/cmdline"), help="kernel command line file")
    ap.add_argument("--platform", choices=("vm", "dir"), default="vm")
    ap.add_argument("--root", type=Path, help="dir platform: machine directory (disks/<name>/ are its disks)")
    ap.add_argument("--address", default="127.0.0.1", help="dir platform: this node's address")
    ap.add_argument("--hostname", default="standin", help="dir platform: this node's hostname")
    ap.add_argument("--uuid", default="", help="dir platform: SMBIOS UUID")
    ap.add_argument("--serial", default="", help="dir platform: SMBIOS serial")
    ap.add_argument("--mac", default="", help="dir platform: boot NIC MAC")
    ap.add_argument("--apid-port", type=int, default=50000)
    ap.add_argument("--trustd-port", type=int, default=50001)
    ap.add_argument("--etcd-client-port", type=int, default=2379)
    ap.add_argument("--etcd-peer-port", type=int, default=2380)
    ap.add_argument("--fetch-attempt-timeout", type=float, default=bootflow.ATTEMPT_TIMEOUT)
    ap.add_argument("--fetch-total-timeout", type=float, default=bootflow.TOTAL_TIMEOUT)
    ap.add_argument(
        "--action-delay", type=float, default=1.0, help="seconds between an answer and its reboot"
    )
    ap.add_argument("--join-timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)
    if args.platform == "dir" and args.root is None:
        ap.error("--platform dir needs --root DIR")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_StandinPrefix())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    platform: Platform
    if args.platform == "vm":
        platform, boot_dir = VMPlatform(), BOOT_FILES_DIR
    else:
        ident = bootflow.Identity(
            uuid=args.uuid.lower(), serial=args.serial, mac=args.mac.lower(), hostname=args.hostname
        )
        platform = DirPlatform(root=args.root, address=args.address, host=args.hostname, ident=ident)
        boot_dir = args.root / "boot-files"
    opts = AgentOptions(
        cmdline_path=args.cmdline,
        boot_dir=boot_dir,
        node=NodeOptions(
            listen_any=args.platform == "vm",
            apid_port=args.apid_port,
            trustd_port=args.trustd_port,
            etcd_client_port=args.etcd_client_port,
            etcd_peer_port=args.etcd_peer_port,
            action_delay=args.action_delay,
            join_timeout=args.join_timeout,
            kube=args.platform == "vm",  # the Kubernetes stand-in runs in the lab's VMs
        ),
        fetch=bootflow.FetchPolicy(
            attempt_timeout=args.fetch_attempt_timeout, total_timeout=args.fetch_total_timeout
        ),
    )
    try:
        return Agent(platform, opts).run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
