"""The few Talos machine-API conversations `up` has with a node, behind one seam.

``TalosAccess`` is what the node flow and cluster formation call; ``TalosOps`` is the real
one, built once per run: the talosconfig is read and the mutual-TLS context built on first
use, then shared by every probe (a probe every 2 s per node used to re-parse the file and
build a new SSL context each time). Tests inject a fake ``TalosAccess`` through the run
context, the way httpx's ``MockTransport`` makes a client testable.

Readiness probes use one short attempt each (the caller polls); actions use the client's
own bounded retries. A probe first only connects to apid's port (``_listening``): a node that is
still installing refuses the connection, and learning that from a bare socket costs a fraction
of building a gRPC channel, a TLS context lookup and a retry policy for it. So a fleet of nodes
being installed can be probed often (the install is noticed soon after it ends) for little CPU.
Everything else about the protocol lives in ``provisioner.talosapi``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Protocol

from ..errors import InputError
from ..talosapi.client import APID_PORT, EtcdMember, RetryPolicy, TalosClient
from ..talosapi.errors import TalosApiError, TalosRefused, TalosUnavailable
from ..talosapi.modes import ApplyMode
from ..talosapi.talosconfig import load_credentials
from ..talosapi.tls import mtls_client_context

__all__ = [
    "EtcdMember",
    "TalosAccess",
    "TalosOps",
    "TalosUnavailable",
    "apply_config",
    "bootstrap",
    "etcd_members",
    "kubeconfig",
    "maintenance_ready",
    "reset",
    "secure_version",
]

_PROBE = RetryPolicy(attempts=1)

# Probes of the nodes' machine API (installed OS, maintenance mode) in flight at once, per run.
# Each holds an asyncio TLS connection, and asyncio gives every one a 256 KiB receive buffer. At
# 1,000 simulated nodes, with the event loop busy, 111 were open at once without a cap, and the
# run peaked at 182 MB; capped at 32, at 158 MB (16: 153 MB). The cap queues probes: installs were
# noticed at p50 14.2 s after the config fetch instead of 11.9 s (the install takes 10 s), but
# fetch to ready did not grow, nor did the wall time: uncapped, the nodes noticed sooner waited
# that much longer for a BMC slot for their disk step.
PROBE_CONCURRENCY = 32


async def _listening(ip: str, port: int, timeout: float) -> bool:
    """Something accepts TCP connections on ``ip:port`` (within ``timeout``)."""
    try:
        infos = socket.getaddrinfo(ip, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return True  # a name, not an address: let the real probe resolve it and say what is wrong
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), timeout)
    except (TimeoutError, OSError):
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    return True


class TalosAccess(Protocol):
    """What a run asks of the nodes' machine API. Every method takes the node's IP."""

    async def maintenance_ready(self, ip: str) -> bool:
        """True once the node's maintenance API answers (it booted without a config)."""
        ...

    async def apply_config(self, ip: str, data: bytes, pin: str | None = None) -> None:
        """Send the machine config to a node in maintenance mode; it installs and reboots.
        With ``pin`` (the SPKI SHA-256 the node prints on its console) the server's key is
        checked before anything is sent; a mismatch raises ``TalosTLSError``."""
        ...

    async def secure_version(self, ip: str) -> str | None:
        """The version tag when the installed OS answers over mutual TLS, else None."""
        ...

    async def etcd_members(self, ip: str) -> list[EtcdMember]:
        """etcd's members as this control plane sees them; [] when etcd is not running yet.
        Raises ``TalosUnavailable`` when the node does not answer."""
        ...

    async def bootstrap(self, ip: str) -> None: ...

    async def kubeconfig(self, ip: str) -> bytes: ...

    async def reset(self, ip: str, graceful: bool) -> None:
        """Wipe the node; ``graceful`` makes a control plane leave etcd first."""
        ...


class TalosOps:
    """The real machine API, with the talosconfig's credentials loaded once per run."""

    def __init__(self, talosconfig: Path | None, probe_timeout: float = 5.0, port: int = APID_PORT) -> None:
        self.talosconfig = talosconfig
        self.probe_timeout = probe_timeout
        self.port = port  # apid's port (50000); tests serve a stand-in elsewhere
        self._mtls: ssl.SSLContext | None = None
        # One per event loop: a semaphore binds to the loop it is first awaited in.
        self._probe_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _context(self) -> ssl.SSLContext:
        # Lazily: the talosconfig is written by the configs stage of the same run.
        if self._mtls is None:
            if self.talosconfig is None:
                raise InputError("no talosconfig: only maintenance-mode calls are possible")
            creds = load_credentials(self.talosconfig)
            self._mtls = mtls_client_context(creds.ca_pem, creds.crt_pem, creds.key_pem)
        return self._mtls

    def _secure(self, ip: str, timeout: float, retry: RetryPolicy | None = None) -> TalosClient:
        return TalosClient(ip, self._context(), port=self.port, timeout=timeout, retry=retry)

    def _probe_slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._probe_slots is None or self._probe_slots[0] is not loop:
            self._probe_slots = (loop, asyncio.Semaphore(PROBE_CONCURRENCY))
        return self._probe_slots[1]

    async def maintenance_ready(self, ip: str) -> bool:
        async with (
            self._probe_slot(),
            TalosClient.maintenance(ip, port=self.port, timeout=self.probe_timeout, retry=_PROBE) as client,
        ):
            try:
                await client.version()
            except TalosApiError:
                return False
        return True

    async def apply_config(self, ip: str, data: bytes, pin: str | None = None) -> None:
        async with TalosClient.maintenance(ip, port=self.port, pin=pin, timeout=60.0) as client:
            await client.apply_configuration(data, mode=ApplyMode.REBOOT)

    async def secure_version(self, ip: str) -> str | None:
        if not await _listening(ip, self.port, self.probe_timeout):
            return None
        async with self._probe_slot(), self._secure(ip, self.probe_timeout, _PROBE) as client:
            try:
                version = await client.version()
            except TalosApiError:
                return None
        return version.tag

    async def etcd_members(self, ip: str) -> list[EtcdMember]:
        async with self._secure(ip, 10.0, _PROBE) as client:
            try:
                return await client.etcd_member_list()
            except TalosRefused:
                return []  # the node answers but etcd is not up: no members yet
            except TalosApiError as exc:
                raise TalosUnavailable(exc.endpoint, exc.rpc, exc.detail, exc.grpc_status) from None

    async def bootstrap(self, ip: str) -> None:
        async with self._secure(ip, 60.0) as client:
            try:
                await client.bootstrap()
            except TalosRefused as exc:
                if exc.grpc_status != "ALREADY_EXISTS":
                    raise

    async def kubeconfig(self, ip: str) -> bytes:
        async with self._secure(ip, 60.0) as client:
            try:
                return await client.kubeconfig()
            except TalosApiError as exc:
                raise TalosUnavailable(exc.endpoint, exc.rpc, exc.detail, exc.grpc_status) from None

    async def reset(self, ip: str, graceful: bool) -> None:
        async with self._secure(ip, 60.0) as client:
            try:
                await client.reset(graceful=graceful, reboot=True)
            except TalosApiError as exc:
                raise TalosUnavailable(exc.endpoint, exc.rpc, exc.detail, exc.grpc_status) from None


# -- one-shot helpers (scripts and tests): each builds its own TalosOps ---------------------------
async def maintenance_ready(ip: str, timeout: float = 5.0) -> bool:
    return await TalosOps(None, timeout).maintenance_ready(ip)


async def apply_config(ip: str, data: bytes) -> None:
    await TalosOps(None).apply_config(ip, data)


async def secure_version(ip: str, talosconfig: Path, timeout: float = 5.0) -> str | None:
    return await TalosOps(talosconfig, timeout).secure_version(ip)


async def etcd_members(ip: str, talosconfig: Path) -> list[EtcdMember]:
    return await TalosOps(talosconfig).etcd_members(ip)


async def bootstrap(ip: str, talosconfig: Path) -> None:
    await TalosOps(talosconfig).bootstrap(ip)


async def kubeconfig(ip: str, talosconfig: Path) -> bytes:
    return await TalosOps(talosconfig).kubeconfig(ip)


async def reset(ip: str, talosconfig: Path, graceful: bool = False) -> None:
    await TalosOps(talosconfig).reset(ip, graceful)
