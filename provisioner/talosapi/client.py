"""Async client of the Talos machine API (grpclib over ``ssl``), with typed results for callers.

Two ways to reach a node, as talosctl does:

- maintenance mode (``TalosClient.maintenance``): no client certificate, the node's self-signed
  certificate is not verified, optionally its SPKI SHA-256 is pinned (checked before any request
  leaves, so a config never goes to an impostor);
- configured mode (``TalosClient.from_talosconfig`` / ``TalosClient.mtls``): mutual TLS with the
  talosconfig's client certificate, the server verified against the OS CA.

Every call has a timeout; only "not there (yet)" failures are retried (UNAVAILABLE,
DEADLINE_EXCEEDED, timeouts, refused/reset connections) with bounded jittered backoff. Refusals
(INVALID_ARGUMENT, PERMISSION_DENIED, ...) and TLS failures are final. Errors are
``TalosApiError``s naming the node, the endpoint and the RPC.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as asyncio_sslproto
import io
import ssl
import tarfile
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import grpclib.client
import grpclib.exceptions
import grpclib.protocol
from google.protobuf import duration_pb2, empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from ..errors import InputError
from . import tls
from .errors import TalosApiError, TalosRefused, TalosTLSError, TalosUnavailable
from .gen.machine import machine_grpc, machine_pb2
from .modes import ApplyMode, WipeMode
from .talosconfig import load_credentials

__all__ = [
    "ApplyMode",
    "ApplyResult",
    "EtcdMember",
    "RetryPolicy",
    "Service",
    "TalosClient",
    "Version",
    "WipeMode",
    "run",
]

T = TypeVar("T")
APID_PORT = 50000
TRANSIENT_STATUSES = frozenset({Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED})

# asyncio gives every TLS connection a receive buffer of ``SSLProtocol.max_size`` (256 KiB, zeroed,
# so all of it resident) for the plaintext it drains from OpenSSL per read. A machine-API message
# is a few KiB and a TLS record at most 16 KiB: 64 KiB per read is plenty. It is the process's
# setting (asyncio has no per-connection one); `up` holds up to ``talos_ops.PROBE_CONCURRENCY``
# (32) probes open at once at 1,000 nodes, so 256 KiB each was 8 MB of its peak memory.
asyncio_sslproto.SSLProtocol.max_size = 64 * 1024


# ------------------------------------------------------------------------------------------------
# Typed results
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApplyResult:
    """ApplyConfiguration's answer: the mode the node actually chose and why."""

    hostname: str
    mode: ApplyMode
    mode_details: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member as a node sees it."""

    id: int
    hostname: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class Service:
    """One Talos service (apid, etcd, kubelet, ...) and its health."""

    id: str
    state: str
    healthy: bool
    health_unknown: bool
    last_message: str


@dataclass(frozen=True)
class Version:
    """What a node runs: ``tag`` (e.g. v1.11.6), platform name and mode (metal, maintenance...)."""

    hostname: str
    tag: str
    sha: str
    arch: str
    platform_name: str
    platform_mode: str


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter for transient failures only."""

    attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 5.0
    jitter: float = 0.5


# ------------------------------------------------------------------------------------------------
# Transport: grpclib channel that checks an SPKI pin and remembers why TLS failed
# ------------------------------------------------------------------------------------------------

class PinMismatch(Exception):
    """The server's public key is not the pinned one (raised before any request is sent)."""


class _Protocol(grpclib.protocol.H2Protocol):
    """H2Protocol that keeps its transport and notes whether the server ever sent a byte.

    Under TLS 1.3 a server that refuses the client certificate does so *after* the client considers
    the handshake done: the client only sees the connection close before any HTTP/2 frame arrives.
    """

    transport: Any = None
    got_data = False
    lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        super().connection_lost(exc)


class _Channel(grpclib.client.Channel):
    """grpclib Channel that verifies the SPKI pin right after the TLS handshake.

    Relies on grpclib's ``_protocol_factory``/``_create_connection`` hooks (stable 0.4.x).
    """

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext, pin: str | None) -> None:
        super().__init__(host, port, ssl=ssl_context)
        self.pin = pin
        self.last_protocol: _Protocol | None = None

    def _protocol_factory(self) -> grpclib.protocol.H2Protocol:
        protocol = _Protocol(grpclib.client.Handler(), self._config, self._h2_config)
        self.last_protocol = protocol
        return protocol

    async def _create_connection(self) -> grpclib.protocol.H2Protocol:
        protocol = await super()._create_connection()
        if self.pin is not None:
            transport = getattr(protocol, "transport", None)
            ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            got = tls.spki_sha256(der) if der else "none"
            if got != self.pin:
                if transport is not None:
                    transport.abort()
                raise PinMismatch(f"server certificate SPKI sha256 {got} does not match the pin {self.pin}")
        return protocol

    def refused_after_handshake(self) -> bool:
        """The last connection completed TLS and was closed before the server said anything."""
        p = self.last_protocol
        return p is not None and p.transport is not None and p.lost and not p.got_data


def _transient(exc: BaseException, channel: _Channel | None) -> bool:
    """Worth another attempt: the node is not (yet) answering, as opposed to answering "no"."""
    if isinstance(exc, GRPCError):
        return exc.status in TRANSIENT_STATUSES
    if isinstance(exc, ssl.SSLError | PinMismatch):
        return False
    if isinstance(exc, grpclib.exceptions.StreamTerminatedError):
        return not (channel is not None and channel.refused_after_handshake())
    return isinstance(exc, asyncio.TimeoutError | ConnectionError | OSError)


# ------------------------------------------------------------------------------------------------
# Client
# ------------------------------------------------------------------------------------------------

class TalosClient:
    """One node's machine API. Use as ``async with``; every method is one RPC with timeout and retry."""

    def __init__(
        self,
        endpoint: str,
        ssl_context: ssl.SSLContext,
        *,
        port: int = APID_PORT,
        node: str | None = None,
        pin: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.port = port
        self.node = node
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._pin = tls.normalize_pin(pin) if pin else None
        self._ssl = ssl_context
        self._channel: _Channel | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def maintenance(cls, endpoint: str, *, pin: str | None = None, **kwargs: Any) -> TalosClient:
        """Client for a node in maintenance mode (no client cert; optional SPKI SHA-256 ``pin``)."""
        return cls(endpoint, tls.maintenance_client_context(), pin=pin, **kwargs)

    @classmethod
    def mtls(cls, endpoint: str, creds: tls.ClientCredentials, **kwargs: Any) -> TalosClient:
        """Client for a configured node with a talosconfig context's CA and client certificate."""
        return cls(endpoint, tls.mtls_client_context(creds.ca_pem, creds.crt_pem, creds.key_pem), **kwargs)

    @classmethod
    def from_talosconfig(
        cls, path: Path, endpoint: str | None = None, *, context: str | None = None, **kwargs: Any
    ) -> TalosClient:
        """Client from a talosconfig file; ``endpoint`` defaults to the context's first endpoint.

        A malformed file or missing endpoint is the operator's to fix: ``InputError`` (exit 2).
        """
        creds = load_credentials(path, context)
        target = endpoint or (creds.endpoints[0] if creds.endpoints else None)
        if target is None:
            raise InputError(f"{path}: the talosconfig context has no endpoints and none was given")
        return cls.mtls(target, creds, **kwargs)

    @property
    def label(self) -> str:
        where = f"{self.endpoint}:{self.port}"
        return f"node {self.node} ({where})" if self.node else where

    async def __aenter__(self) -> TalosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _stub(self) -> machine_grpc.MachineServiceStub:
        if self._channel is None:
            self._channel = _Channel(self.endpoint, self.port, ssl_context=self._ssl, pin=self._pin)
        return machine_grpc.MachineServiceStub(self._channel)

    # -- call machinery -------------------------------------------------------------------------

    async def _call(self, rpc: str, attempt: Callable[[float], Awaitable[T]], timeout: float | None) -> T:
        """Run ``attempt(timeout)`` with the retry policy; translate failures into TalosApiErrors."""
        budget = self.timeout if timeout is None else timeout
        policy = self.retry
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: _transient(exc, self._channel)),
            stop=stop_after_attempt(max(1, policy.attempts)),
            wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
            + wait_random(0, policy.jitter),
            reraise=True,
        )
        tries = 0
        try:
            async for state in retrying:
                with state:
                    tries += 1
                    # grpclib's timeout tells the server the deadline; wait_for also bounds connect + TLS.
                    return await asyncio.wait_for(attempt(budget), budget + 1.0)
        except Exception as exc:
            translated = self._translate(rpc, exc, tries, budget)
            if translated is exc:
                raise
            raise translated from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _translate(self, rpc: str, exc: Exception, tries: int, budget: float) -> Exception:
        where = self.label
        after = f" (after {tries} attempt{'s' if tries != 1 else ''})"
        if isinstance(exc, GRPCError):
            detail = (exc.message or exc.status.name) + (after if exc.status in TRANSIENT_STATUSES else "")
            cls = TalosUnavailable if exc.status in TRANSIENT_STATUSES else TalosRefused
            return cls(where, rpc, detail, exc.status.name)
        if isinstance(exc, PinMismatch):
            return TalosTLSError(where, rpc, str(exc))
        if isinstance(exc, ssl.SSLError):
            return TalosTLSError(where, rpc, f"TLS handshake failed: {exc.reason or exc}")
        if isinstance(exc, asyncio.TimeoutError):
            return TalosUnavailable(where, rpc, f"no answer within {budget:g}s{after}", "DEADLINE_EXCEEDED")
        if isinstance(exc, grpclib.exceptions.StreamTerminatedError | ConnectionError | OSError):
            if self._channel is not None and self._channel.refused_after_handshake():
                return TalosTLSError(
                    where, rpc, "the node closed the connection right after the TLS handshake: it refused "
                    "the client certificate (not signed by this node's OS CA?) or does not speak mutual TLS",
                )
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            return TalosUnavailable(where, rpc, f"cannot reach the node: {reason}{after}")
        return exc

    async def _unary(self, rpc: str, request: Any, timeout: float | None) -> Any:
        async def attempt(budget: float) -> Any:
            method = getattr(self._stub(), rpc)
            reply = await method(request, timeout=budget)
            _check_metadata(reply, self.label, rpc)
            return reply

        return await self._call(rpc, attempt, timeout)

    # -- RPCs -----------------------------------------------------------------------------------

    async def apply_configuration(
        self,
        data: bytes,
        mode: ApplyMode = ApplyMode.AUTO,
        dry_run: bool = False,
        try_mode_timeout: float | None = None,
        *,
        timeout: float | None = None,
    ) -> ApplyResult:
        """Send a machine config. The config bytes are secret: they never appear in errors or logs."""
        request = machine_pb2.ApplyConfigurationRequest(data=data, mode=cast(Any, int(mode)), dry_run=dry_run)
        if try_mode_timeout is not None:
            request.try_mode_timeout.CopyFrom(duration_pb2.Duration(seconds=int(try_mode_timeout)))
        reply = await self._unary("ApplyConfiguration", request, timeout)
        msg = _first(reply, self.label, "ApplyConfiguration")
        return ApplyResult(msg.metadata.hostname, ApplyMode(msg.mode), msg.mode_details, tuple(msg.warnings))

    async def bootstrap(self, recover_etcd: bool = False, *, timeout: float | None = None) -> None:
        """Start etcd on this control plane. Refused with ALREADY_EXISTS when etcd already has data."""
        await self._unary("Bootstrap", machine_pb2.BootstrapRequest(recover_etcd=recover_etcd), timeout)

    async def etcd_member_list(
        self, query_local: bool = False, *, timeout: float | None = None
    ) -> list[EtcdMember]:
        reply = await self._unary(
            "EtcdMemberList", machine_pb2.EtcdMemberListRequest(query_local=query_local), timeout
        )
        return [
            EtcdMember(m.id, m.hostname, tuple(m.peer_urls), tuple(m.client_urls), m.is_learner)
            for msg in reply.messages
            for m in msg.members
        ]

    async def service_list(self, *, timeout: float | None = None) -> list[Service]:
        reply = await self._unary("ServiceList", empty_pb2.Empty(), timeout)
        return [
            Service(s.id, s.state, s.health.healthy, s.health.unknown, s.health.last_message)
            for msg in reply.messages
            for s in msg.services
        ]

    async def version(self, *, timeout: float | None = None) -> Version:
        reply = await self._unary("Version", empty_pb2.Empty(), timeout)
        msg = _first(reply, self.label, "Version")
        v = msg.version
        return Version(msg.metadata.hostname, v.tag, v.sha, v.arch, msg.platform.name, msg.platform.mode)

    async def kubeconfig(self, *, timeout: float | None = None) -> bytes:
        """The admin kubeconfig: the ``kubeconfig`` file of the tar.gz the node streams. Secret bytes."""

        async def attempt(budget: float) -> bytes:
            chunks = await self._stub().Kubeconfig(empty_pb2.Empty(), timeout=budget)
            for chunk in chunks:
                if chunk.metadata.error:
                    raise TalosRefused(self.label, "Kubeconfig", chunk.metadata.error)
            return b"".join(chunk.bytes for chunk in chunks)

        archive = await self._call("Kubeconfig", attempt, timeout)
        return _unpack_kubeconfig(archive, self.label)

    async def reset(
        self,
        graceful: bool = True,
        reboot: bool = False,
        wipe_mode: WipeMode = WipeMode.ALL,
        *,
        timeout: float | None = None,
    ) -> None:
        """Wipe the node (it network-boots again afterwards) and reboot or power off."""
        request = machine_pb2.ResetRequest(graceful=graceful, reboot=reboot, mode=cast(Any, int(wipe_mode)))
        await self._unary("Reset", request, timeout)


def _first(reply: Any, where: str, rpc: str) -> Any:
    if not reply.messages:
        raise TalosApiError(where, rpc, "empty response (no messages)")
    return reply.messages[0]


def _check_metadata(reply: Any, where: str, rpc: str) -> None:
    """Talos reports per-node failures inside ``metadata.error`` of an otherwise successful reply."""
    for msg in getattr(reply, "messages", ()):
        if msg.HasField("metadata") and msg.metadata.error:
            raise TalosRefused(where, rpc, msg.metadata.error)


def _unpack_kubeconfig(archive: bytes, where: str) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).name == "kubeconfig":
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        return extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        detail = f"stream is not a readable tar.gz ({type(exc).__name__})"
        raise TalosApiError(where, "Kubeconfig", detail) from None
    raise TalosApiError(where, "Kubeconfig", "the tar.gz stream holds no 'kubeconfig' file")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one client coroutine from synchronous code (the CLI): ``run(client_call(...))``."""
    return asyncio.run(coro)
