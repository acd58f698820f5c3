"""A simulated machine behind an emulated BMC: netboot client and Talos API stand-in (no VM).

``FleetMachine`` implements the lab's ``Machine`` protocol, so the IPMI and Redfish emulators drive
it exactly as they drive a QEMU machine. What a power-on does depends on the boot it takes:

- PXE: after ``Delays.boot`` its netboot client asks the tool's netboot service for ``/boot.ipxe``
  and ``/node.ipxe?mac=..&uuid=..`` over HTTP from the machine's own address, takes the
  ``talos.config=`` URL from the install script and fetches its machine config (the Talos kernel
  and initramfs downloads are skipped: they are bytes, not protocol). With a config, it "installs"
  for ``Delays.install`` and then boots the installed system.
- disk: the installed system, if there is one, comes up.

The installed system is the lab's apid stand-in (``provisioner.lab.standin.apid``) serving the
machine API on ``<node ip>:50000`` with mutual TLS against the config's OS CA. Control planes sign
their server certificate with the CA key in their config; workers, which on Talos get theirs from
trustd, sign it with the OS CA from the state directory's secrets bundle instead (a stand-in
shortcut that skips one RPC per worker). etcd is ``cluster.SharedEtcd``.

The asyncio loop that runs all of this is one thread per emulator process (``Runtime``): the
emulators call ``power_on`` from their own threads and the work is handed to the loop.
Every node counts what it was asked (HTTP requests it made, Talos API calls it answered); the
fleet reads the counts through the emulator's control pipe (``snapshot``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import re
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from ...layout import StateLayout
from ...talosapi import certs
from ..machine import BootSelection, BootTarget, MachineIdentity, MachineSpec
from ..standin import apid
from ..standin.backend import (
    AlreadyExists,
    ApplyMode,
    ApplyResult,
    Backend,
    EtcdMember,
    NotReady,
    PreconditionFailed,
    ServiceStatus,
    VersionInfo,
    WipeMode,
)
from .cluster import SharedEtcd
from .plan import NETBOOT_PORT, NETBOOT_SERVER, FleetPlan

log = logging.getLogger("provisioner.lab.fleet")

STANDIN_TAG = "v1.11.6-standin"
KUBECONFIG = b"""apiVersion: v1
kind: Config
# talos stand-in (simulated fleet): no Kubernetes API behind this kubeconfig
clusters: [{name: fleet, cluster: {server: "https://127.0.0.10:6443"}}]
contexts: [{name: admin@fleet, context: {cluster: fleet, user: admin@fleet}}]
current-context: admin@fleet
users: [{name: admin@fleet, user: {}}]
"""


class Runtime:
    """The emulator process's asyncio loop, in its own thread, started on first use."""

    _instance: Runtime | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # The loop holds its tasks weakly: a task waiting on a future that nothing else holds
        # would be garbage-collected mid-boot. Keep every submitted one until it is done.
        self._running: set[concurrent.futures.Future[None]] = set()
        threading.Thread(target=self.loop.run_forever, name="fleet-nodes", daemon=True).start()

    @classmethod
    def get(cls) -> Runtime:
        with cls._guard:
            if cls._instance is None:
                cls._instance = Runtime()
            return cls._instance

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with self._guard:
            self._running.add(fut)
        fut.add_done_callback(self._forget)

    def _forget(self, fut: concurrent.futures.Future[None]) -> None:
        with self._guard:
            self._running.discard(fut)


async def http_get(source_ip: str, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET to the netboot service from ``source_ip`` (the node's own address)."""
    reader, writer = await asyncio.open_connection(NETBOOT_SERVER, NETBOOT_PORT, local_addr=(source_ip, 0))
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {NETBOOT_SERVER}:{NETBOOT_PORT}\r\n"
            "User-Agent: iPXE/1.21 (provisioner fleet stand-in)\r\nConnection: close\r\n\r\n".encode()
        )
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


_CONFIG_URL = re.compile(r"talos\.config=(\S+)")


@dataclass
class FleetMachine:
    """One simulated server (a stand-in): power, boot selection, install state, its node's services."""

    name: str
    identity: MachineIdentity
    ip: str
    controlplane: bool
    plan: FleetPlan
    boot: BootSelection = field(default_factory=BootSelection)
    powered: bool = False
    config: bytes | None = None  # the installed system's machine config
    counts: Counter[str] = field(default_factory=Counter)
    generation: int = 0  # bumped by every power change: stale boot work stops
    _server: apid.RunningServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- Machine protocol (called from emulator threads) ------------------------------------------
    def power_state(self) -> bool:
        with self._lock:
            return self.powered

    def power_on(self) -> None:
        with self._lock:
            if self.powered:
                return
            self.powered = True
            self._start_boot()

    def power_off(self, hard: bool) -> None:
        with self._lock:
            self.powered = False
            self.generation += 1
            gen = self.generation
        Runtime.get().submit(self._halt(gen))

    def reset(self) -> None:
        with self._lock:
            self.powered = True
            self._start_boot()

    def boot_device(self) -> Any:
        with self._lock:
            return self.boot.current()

    def set_boot_device(self, device: BootTarget, persistent: bool, uefi: bool) -> None:
        with self._lock:
            self.boot.set(device, persistent, uefi)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "powered": self.powered,
                "installed": self.config is not None,
                "boot": self.boot.as_dict(),
                "counts": dict(self.counts),
            }

    # --- boot ---------------------------------------------------------------------------------------
    def _start_boot(self) -> None:
        """Caller holds the lock."""
        self.generation += 1
        setting = self.boot.take_for_boot()
        Runtime.get().submit(self._boot(self.generation, setting.device))

    def _current(self, gen: int) -> bool:
        with self._lock:
            return self.generation == gen and self.powered

    async def _halt(self, gen: int) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _boot(self, gen: int, device: str) -> None:
        try:
            await self._halt(gen)
            if device == "pxe":
                await asyncio.sleep(self.plan.delays.boot)
                if not self._current(gen):
                    return
                config = await self._netboot(gen)
                if config is None:
                    return  # told to boot from disk, or no config: falls through to the disk
                await asyncio.sleep(self.plan.delays.install)
                with self._lock:
                    if self.generation != gen or not self.powered:
                        return
                    self.config = config
            if self._current(gen) and self.config is not None:
                await self._serve_installed(gen)
        except Exception:  # one machine's failure is its own; it shows as a node that never answers
            log.exception("fleet stand-in %s: boot failed", self.name)

    async def _get(self, gen: int, path: str) -> tuple[int, bytes]:
        """GET as iPXE does it: a failed request is tried again after a pause, while powered on."""
        while True:
            self.counts["http"] += 1
            try:
                return await http_get(self.ip, path)
            except OSError as exc:
                log.warning("fleet stand-in %s: GET %s failed (%s); retrying in 2 s", self.name, path, exc)
                self.counts["http.failed"] += 1
            await asyncio.sleep(2.0)
            if not self._current(gen):
                return 0, b""

    async def _netboot(self, gen: int) -> bytes | None:
        mac = self.identity.macs[0].replace(":", "-")
        for path in ("/boot.ipxe", f"/node.ipxe?mac={mac}&uuid={self.identity.uuid}"):
            status, body = await self._get(gen, path)
            if status != 200:
                log.warning("fleet stand-in %s: GET %s -> %s", self.name, path, status)
                return None
        found = _CONFIG_URL.search(body.decode("utf-8", "replace"))
        if found is None:
            return None  # a boot-from-disk script
        url = found.group(1).replace("${uuid}", self.identity.uuid)
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        status, body = await self._get(gen, path)
        return body if status == 200 else None

    def _tls_material(self) -> tuple[bytes, certs.ServerCert]:
        """The OS CA and this node's server certificate (CPU work: run in a thread, never on the loop
        that serves every other machine of the process)."""
        assert self.config is not None
        doc = yaml.load(self.config, Loader=yaml.CSafeLoader)
        ca = doc["machine"]["ca"]
        ca_crt = base64.b64decode(ca["crt"])
        ca_key = base64.b64decode(ca["key"]) if ca.get("key") else _os_ca_key(self.plan)
        return ca_crt, certs.signed_by_ca(ca_crt, ca_key, self.name, [self.ip])

    async def _serve_installed(self, gen: int) -> None:
        ca_crt, cert = await asyncio.to_thread(self._tls_material)
        server = await apid.serve_configured(
            self.ip,
            apid.APID_PORT,
            cast(Backend, FleetBackend(self)),  # async methods: apid awaits them (see apid._call)
            ca_crt,
            None,
            [self.ip],
            server_cert=cert,
        )
        if not self._current(gen):
            await server.stop()
            return
        self._server = server
        if self.controlplane:
            await asyncio.to_thread(SharedEtcd(self.plan.etcd_file).installed, self.name)


_ca_keys: dict[Path, bytes] = {}
_ca_guard = threading.Lock()


def _os_ca_key(plan: FleetPlan) -> bytes:
    """Workers get their server certificate from trustd on Talos; the stand-in signs it with the OS CA
    key from the state directory's secrets bundle instead (read once per process).

    Only ``certs.os.key`` is read, as PEM (talosctl's format: base64 of the PEM). The whole
    bundle's loader checks every key, the RSA-4096 service-account key included: 0.3 CPU s, plus
    importing the inventory model, in each simulator process at the moment its first node
    installed, while `up` ran on the same cores."""
    path = StateLayout(plan.state_dir).secrets
    with _ca_guard:
        if path not in _ca_keys:
            bundle = yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
            _ca_keys[path] = base64.b64decode(bundle["certs"]["os"]["key"])
        return _ca_keys[path]


class FleetBackend:
    """What the installed stand-in does when the machine API asks (see ``apid.Backend``)."""

    def __init__(self, machine: FleetMachine) -> None:
        self.m = machine
        self.etcd = SharedEtcd(machine.plan.etcd_file, machine.plan.delays.etcd_join)

    def _count(self, rpc: str) -> None:
        self.m.counts[f"talos.{rpc}"] += 1
        self.m.counts["talos"] += 1

    async def hostname(self) -> str:
        return self.m.name

    async def disks(self) -> list[str]:
        return ["/dev/sda", "/dev/sdb"]

    async def apply_config(self, data: bytes, mode: ApplyMode, dry_run: bool) -> ApplyResult:
        self._count("ApplyConfiguration")
        return ApplyResult(mode=mode, mode_details="talos stand-in: config taken (simulated fleet)")

    async def bootstrap(self, recover_etcd: bool) -> None:
        self._count("Bootstrap")
        if not self.m.controlplane:
            raise PreconditionFailed("talos stand-in: bootstrap is only possible on a control plane")
        if not await asyncio.to_thread(self.etcd.bootstrap, self.m.name):
            raise AlreadyExists("talos stand-in: etcd data directory is not empty")

    async def etcd_members(self) -> list[EtcdMember]:
        self._count("EtcdMemberList")
        if not self.m.controlplane:
            raise PreconditionFailed("talos stand-in: etcd is not running on a worker")
        members = await asyncio.to_thread(self.etcd.members)
        if members is None:
            raise PreconditionFailed("talos stand-in: etcd is not running (not bootstrapped)")
        return [EtcdMember(i + 1, name, is_learner=learner) for i, (name, learner) in enumerate(members)]

    async def services(self) -> list[ServiceStatus]:
        return [ServiceStatus("apid", "Running", healthy=True, health_unknown=False)]

    async def kubeconfig(self) -> bytes:
        self._count("Kubeconfig")
        if not await asyncio.to_thread(self.etcd.bootstraps):
            raise NotReady("talos stand-in: the cluster is not bootstrapped yet")
        return KUBECONFIG

    async def reset(self, graceful: bool, reboot: bool, mode: WipeMode) -> None:
        self._count("Reset")
        with self.m._lock:
            self.m.config = None

    async def version(self) -> VersionInfo:
        self._count("Version")
        return VersionInfo(tag=STANDIN_TAG)


@dataclass(frozen=True)
class FleetMachineFactory:
    """The picklable machine factory the BMC emulator processes build their machines with."""

    plan: FleetPlan

    def __call__(self, spec: MachineSpec) -> FleetMachine:
        i = self.plan.index(spec.name)
        return FleetMachine(
            name=spec.name,
            identity=spec.identity,
            ip=self.plan.node_ip(i),
            controlplane=i < self.plan.controlplanes,
            plan=self.plan,
        )


def read_counts(snapshots: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for s in snapshots:
        total.update(s.get("counts", {}))
    return total
