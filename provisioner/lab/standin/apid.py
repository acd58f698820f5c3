"""The stand-in's machine API (apid, :50000) and trustd (:50001): the Talos contract over grpclib + ssl.

Runs inside each lab VM under Debian's python3 with only grpclib/h2/multidict/protobuf/cryptography,
about 20x slower than on the host: no PyYAML, no tenacity, nothing imported that is not needed.

- ``serve_maintenance``: self-signed Ed25519 certificate made at start, server-only TLS, its SPKI
  fingerprint printed on the console; ApplyConfiguration and Version only.
- ``serve_configured``: mutual TLS; client certificates must be signed by the config's OS CA (anything
  else fails the handshake); the role comes from the client certificate's Organization: ``os:admin``
  may call everything, ``os:reader``/``os:operator`` only the read-only RPCs. The server certificate
  covers the node's addresses and is signed by the OS CA (control planes hold its key) or obtained
  from a control plane's trustd with the machine token (workers): ``fetch_server_cert``.
- ``serve_trustd``: SecurityService.Certificate signs a worker's CSR when the ``token`` metadata
  matches the config's machine token.

What the node *does* is the Backend's job (``backend.py``). Every log line says "talos stand-in".
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import io
import logging
import re
import socket
import ssl
import tarfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpclib.client
import grpclib.exceptions
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from provisioner.talosapi import certs, tls
from provisioner.talosapi.gen.common import common_pb2
from provisioner.talosapi.gen.machine import machine_grpc, machine_pb2
from provisioner.talosapi.gen.security import security_grpc, security_pb2

from .backend import ApplyMode, Backend, BackendError, WipeMode

log = logging.getLogger("talos-standin.apid")
T = TypeVar("T")

APID_PORT = 50000
TRUSTD_PORT = 50001
KUBECONFIG_CHUNK = 16 * 1024

# Talos's authorization, reduced to what the provisioner uses: read-only RPCs for every role.
READ_ONLY_RPCS = frozenset({"Version", "ServiceList", "EtcdMemberList"})
READ_ROLES = frozenset({"os:reader", "os:operator", "os:admin"})
ADMIN_ROLE = "os:admin"
# Maintenance mode offers what the real one offers the provisioner: apply a config, say its version.
MAINTENANCE_RPCS = frozenset({"ApplyConfiguration", "Version"})
MAINTENANCE_MODES = frozenset({ApplyMode.REBOOT, ApplyMode.AUTO, ApplyMode.TRY})


# ---------------------------------------------------------------------------------------------------
# Machine config checks (no PyYAML in the image: a scanner for the block-style YAML Talos configs use)
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigSummary:
    """What apid needs to know about an applied config before handing it to the backend."""

    version: str | None
    top_keys: frozenset[str]
    install_disk: str | None


_KEY_LINE = re.compile(r"""^(?P<key>[A-Za-z0-9_.-]+|"[^"]*"|'[^']*')\s*:(?:\s+(?P<value>.*))?$""")


def _unquote(value: str) -> str:
    value = value.strip()
    if " #" in value:
        value = value.split(" #", 1)[0].rstrip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def scan_config(text: str) -> ConfigSummary:
    """Read the top-level keys, ``version`` and ``machine.install.disk`` of the first YAML document.

    Handles block-style mappings (what ``talosctl gen config`` and the provisioner emit); list items
    are skipped since nothing checked here lives in a list.
    """
    version: str | None = None
    disk: str | None = None
    top: set[str] = set()
    path: list[tuple[int, str]] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("---"):
            if top:
                break  # only the first document is the v1alpha1 machine config
            continue
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or stripped == "-":
            continue
        match = _KEY_LINE.match(stripped)
        if match is None:
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        key = _unquote(match.group("key"))
        value = _unquote(match.group("value") or "")
        while path and path[-1][0] >= indent:
            path.pop()
        keys = [k for _, k in path] + [key]
        if len(keys) == 1:
            top.add(key)
            if key == "version":
                version = value
        elif keys == ["machine", "install", "disk"]:
            disk = value or None
        path.append((indent, key))
    return ConfigSummary(version, frozenset(top), disk)


def check_config(data: bytes, disks: Iterable[str]) -> str | None:
    """Why ``data`` is not an acceptable machine config for this machine, or None if it is."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "machine config is not UTF-8 text (expected a v1alpha1 YAML document)"
    summary = scan_config(text)
    if summary.version != "v1alpha1":
        found = f"version: {summary.version!r}" if summary.version is not None else "no top-level 'version'"
        return f"not a v1alpha1 machine config: {found}"
    missing = [k for k in ("machine", "cluster") if k not in summary.top_keys]
    if missing:
        return f"not a v1alpha1 machine config: missing top-level {', '.join(missing)}"
    known = list(disks)
    if summary.install_disk is not None and summary.install_disk not in known:
        return (
            f"machine.install.disk {summary.install_disk!r} does not exist on this machine "
            f"(disks: {', '.join(known) or 'none'})"
        )
    return None


# ---------------------------------------------------------------------------------------------------
# Helpers shared by the services
# ---------------------------------------------------------------------------------------------------

async def _call(fn: Callable[..., T] | Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a backend method (thread for plain functions, awaited for coroutines), mapping its errors."""
    try:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)  # type: ignore[no-any-return]
        return await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]
    except BackendError as exc:
        raise GRPCError(Status[exc.grpc_status], str(exc)) from None
    except GRPCError:
        raise
    except Exception:
        log.exception("talos stand-in: apid: backend %s failed", getattr(fn, "__name__", fn))
        raise GRPCError(Status.INTERNAL, "talos stand-in: internal error (see the node's console)") from None


def peer_roles(stream: grpclib.server.Stream[Any, Any]) -> frozenset[str]:
    """Roles = Organization values of the verified client certificate (none without one)."""
    cert = stream.peer.cert()
    if not cert:
        return frozenset()
    return frozenset(
        value for rdn in cert.get("subject", ()) for name, value in rdn if name == "organizationName"
    )


def kubeconfig_targz(kubeconfig: bytes) -> bytes:
    """The Kubeconfig stream's payload: a .tar.gz holding one file named ``kubeconfig`` (0600)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("kubeconfig")
        info.size = len(kubeconfig)
        info.mode = 0o600
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(kubeconfig))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# MachineService
# ---------------------------------------------------------------------------------------------------

class MachineService(machine_grpc.MachineServiceBase):
    """machine.MachineService for one node, in maintenance or configured mode."""

    def __init__(self, backend: Backend, maintenance: bool) -> None:
        self.backend = backend
        self.maintenance = maintenance

    async def _metadata(self) -> common_pb2.Metadata:
        return common_pb2.Metadata(hostname=await _call(self.backend.hostname))

    def _authorize(self, stream: grpclib.server.Stream[Any, Any], rpc: str) -> None:
        if self.maintenance:
            if rpc not in MAINTENANCE_RPCS:
                msg = f"talos stand-in: {rpc} is not available in maintenance mode"
                raise GRPCError(Status.UNIMPLEMENTED, msg)
            return
        roles = peer_roles(stream)
        allowed = ADMIN_ROLE in roles or (rpc in READ_ONLY_RPCS and roles & READ_ROLES)
        if not allowed:
            log.warning("talos stand-in: apid: %s denied for roles %s", rpc, sorted(roles) or "none")
            have = ", ".join(sorted(roles)) or "none"
            msg = f"talos stand-in: {rpc} needs role {ADMIN_ROLE}; client has {have}"
            raise GRPCError(Status.PERMISSION_DENIED, msg)

    async def ApplyConfiguration(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._authorize(stream, "ApplyConfiguration")
        mode = ApplyMode(request.mode)
        if self.maintenance and mode not in MAINTENANCE_MODES:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"talos stand-in: apply mode {mode.name} is not supported in maintenance mode "
                "(use REBOOT, AUTO or TRY)",
            )
        problem = check_config(request.data, await _call(self.backend.disks))
        if problem is not None:
            log.warning("talos stand-in: apid: ApplyConfiguration refused: %s", problem)
            raise GRPCError(Status.INVALID_ARGUMENT, f"talos stand-in: {problem}")
        result = await _call(self.backend.apply_config, request.data, mode, request.dry_run)
        log.info("talos stand-in: apid: config accepted (mode %s, dry run %s)", mode.name, request.dry_run)
        await stream.send_message(
            machine_pb2.ApplyConfigurationResponse(
                messages=[
                    machine_pb2.ApplyConfiguration(
                        metadata=await self._metadata(),
                        warnings=list(result.warnings),
                        mode=cast(Any, int(result.mode)),
                        mode_details=result.mode_details,
                    )
                ]
            )
        )

    async def Bootstrap(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._authorize(stream, "Bootstrap")
        await _call(self.backend.bootstrap, request.recover_etcd)
        log.info("talos stand-in: apid: bootstrap requested")
        await stream.send_message(
            machine_pb2.BootstrapResponse(messages=[machine_pb2.Bootstrap(metadata=await self._metadata())])
        )

    async def EtcdMemberList(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        self._authorize(stream, "EtcdMemberList")
        members = await _call(self.backend.etcd_members)
        await stream.send_message(
            machine_pb2.EtcdMemberListResponse(
                messages=[
                    machine_pb2.EtcdMembers(
                        metadata=await self._metadata(),
                        members=[
                            machine_pb2.EtcdMember(
                                id=m.id,
                                hostname=m.hostname,
                                peer_urls=list(m.peer_urls),
                                client_urls=list(m.client_urls),
                                is_learner=m.is_learner,
                            )
                            for m in members
                        ],
                    )
                ]
            )
        )

    async def Kubeconfig(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        self._authorize(stream, "Kubeconfig")
        payload = kubeconfig_targz(await _call(self.backend.kubeconfig))
        metadata = await self._metadata()
        for offset in range(0, len(payload), KUBECONFIG_CHUNK):
            chunk = payload[offset : offset + KUBECONFIG_CHUNK]
            await stream.send_message(common_pb2.Data(metadata=metadata, bytes=chunk))

    async def Reset(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._authorize(stream, "Reset")
        await _call(self.backend.reset, request.graceful, request.reboot, WipeMode(request.mode))
        log.info("talos stand-in: apid: reset (graceful %s, reboot %s)", request.graceful, request.reboot)
        await stream.send_message(
            machine_pb2.ResetResponse(messages=[machine_pb2.Reset(metadata=await self._metadata())])
        )

    async def ServiceList(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        self._authorize(stream, "ServiceList")
        services = await _call(self.backend.services)
        await stream.send_message(
            machine_pb2.ServiceListResponse(
                messages=[
                    machine_pb2.ServiceList(
                        metadata=await self._metadata(),
                        services=[
                            machine_pb2.ServiceInfo(
                                id=s.id,
                                state=s.state,
                                health=machine_pb2.ServiceHealth(
                                    unknown=s.health_unknown, healthy=s.healthy, last_message=s.last_message
                                ),
                            )
                            for s in services
                        ],
                    )
                ]
            )
        )

    async def Version(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        self._authorize(stream, "Version")
        info = await _call(self.backend.version)
        await stream.send_message(
            machine_pb2.VersionResponse(
                messages=[
                    machine_pb2.Version(
                        metadata=await self._metadata(),
                        version=machine_pb2.VersionInfo(
                            tag=info.tag, sha=info.sha, built=info.built, go_version=info.go_version,
                            os=info.os, arch=info.arch,
                        ),
                        platform=machine_pb2.PlatformInfo(name=info.platform_name, mode=info.platform_mode),
                        features=machine_pb2.FeaturesInfo(rbac=info.rbac),
                    )
                ]
            )
        )


# ---------------------------------------------------------------------------------------------------
# trustd (SecurityService)
# ---------------------------------------------------------------------------------------------------

class SecurityService(security_grpc.SecurityServiceBase):
    """securityapi.SecurityService: signs worker CSRs with the OS CA for holders of the machine token."""

    def __init__(self, os_ca_crt: bytes, os_ca_key: bytes, token: str) -> None:
        self._ca_crt = os_ca_crt
        self._ca_key = os_ca_key
        self._token = token.encode()

    async def Certificate(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        presented = str(stream.metadata.get("token", "") if stream.metadata else "").encode()
        if not hmac.compare_digest(presented, self._token):
            log.warning("talos stand-in: trustd: certificate request with a wrong or missing token refused")
            raise GRPCError(Status.UNAUTHENTICATED, "talos stand-in: trustd: machine token missing or wrong")
        try:
            crt = certs.sign_csr(self._ca_crt, self._ca_key, request.csr)
        except ValueError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"talos stand-in: trustd: {exc}") from None
        log.info("talos stand-in: trustd: signed a server certificate")
        await stream.send_message(security_pb2.CertificateResponse(ca=self._ca_crt, crt=crt))


# ---------------------------------------------------------------------------------------------------
# Running servers
# ---------------------------------------------------------------------------------------------------

@dataclass
class RunningServer:
    """A started grpclib server: where it listens and (for apid) the SPKI pin of its certificate."""

    server: grpclib.server.Server
    host: str
    port: int
    spki_sha256: str

    def close(self) -> None:
        self.server.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()

    async def stop(self) -> None:
        self.close()
        await self.wait_closed()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket. proto must say IPPROTO_TCP: asyncio and grpclib only set TCP_NODELAY on
    sockets that do, and without it every TLS-wrapped RPC waits ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(100)
    except OSError:
        sock.close()
        raise
    return sock


async def _start(
    handlers: list[Any], host: str, port: int, ctx: ssl.SSLContext, crt_pem: bytes
) -> RunningServer:
    server = grpclib.server.Server(handlers)
    sock = _listen(host, port)
    await server.start(sock=sock, ssl=ctx)
    return RunningServer(server, host, sock.getsockname()[1], tls.spki_sha256(crt_pem))


async def serve_maintenance(host: str, port: int, backend: Backend) -> RunningServer:
    """Maintenance-mode apid: fresh self-signed Ed25519 cert, server-only TLS; prints the SPKI pin."""
    hostname = await _call(backend.hostname)
    cert = certs.self_signed(hostname)
    ctx = tls.server_context(cert.crt_pem, cert.key_pem, client_ca_pem=None)
    running = await _start([MachineService(backend, maintenance=True)], host, port, ctx, cert.crt_pem)
    print(
        f"talos stand-in: maintenance mode: machine API on {host}:{running.port}, "
        f"server certificate SPKI sha256 fingerprint {running.spki_sha256}",
        flush=True,
    )
    return running


async def serve_configured(
    host: str,
    port: int,
    backend: Backend,
    os_ca_crt: bytes,
    os_ca_key: bytes | None,
    node_ips: Iterable[str],
    *,
    server_cert: certs.ServerCert | None = None,
) -> RunningServer:
    """Configured apid: mutual TLS against the OS CA, role from the client certificate's Organization.

    Control planes pass ``os_ca_key`` and get a server cert for ``node_ips`` signed here; workers pass
    ``os_ca_key=None`` and the ``server_cert`` they got from ``fetch_server_cert`` (trustd).
    ``node_ips`` must hold every address clients use: the provisioner's client verifies the hostname.
    """
    ips = list(node_ips)
    if server_cert is None:
        if os_ca_key is None:
            raise ValueError("talos stand-in: a worker needs server_cert= from trustd (fetch_server_cert)")
        server_cert = certs.signed_by_ca(os_ca_crt, os_ca_key, await _call(backend.hostname), ips)
    ctx = tls.server_context(server_cert.crt_pem, server_cert.key_pem, client_ca_pem=os_ca_crt)
    running = await _start([MachineService(backend, maintenance=False)], host, port, ctx, server_cert.crt_pem)
    log.info("talos stand-in: apid: machine API with mutual TLS on %s:%s for %s", host, running.port, ips)
    return running


async def serve_trustd(
    host: str, port: int, os_ca_crt: bytes, os_ca_key: bytes, token: str, node_ips: Iterable[str]
) -> RunningServer:
    """trustd on a control plane: server-only TLS (cert for ``node_ips`` by the OS CA), token-checked."""
    ips = list(node_ips)
    cert = certs.signed_by_ca(os_ca_crt, os_ca_key, "trustd", ips)
    ctx = tls.server_context(cert.crt_pem, cert.key_pem, client_ca_pem=None)
    running = await _start([SecurityService(os_ca_crt, os_ca_key, token)], host, port, ctx, cert.crt_pem)
    log.info("talos stand-in: trustd: listening on %s:%s", host, running.port)
    return running


async def request_certificate(
    endpoint: str, port: int, os_ca_crt: bytes, token: str, csr_pem: bytes, timeout: float = 10.0
) -> bytes:
    """One trustd Certificate call: verify trustd against the OS CA, send the token; returns the crt PEM."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(tls.ALPN)
    ctx.load_verify_locations(cadata=os_ca_crt.decode("ascii"))
    channel = grpclib.client.Channel(endpoint, port, ssl=ctx)
    try:
        stub = security_grpc.SecurityServiceStub(channel)
        reply = await stub.Certificate(
            security_pb2.CertificateRequest(csr=csr_pem), metadata={"token": token}, timeout=timeout
        )
    finally:
        channel.close()
    return bytes(reply.crt)


async def fetch_server_cert(
    trustd_endpoints: Iterable[str],
    os_ca_crt: bytes,
    token: str,
    hostname: str,
    node_ips: Iterable[str],
    *,
    port: int = TRUSTD_PORT,
    deadline: float = 600.0,
    interval: float = 5.0,
) -> certs.ServerCert:
    """A worker's server certificate from the first trustd that answers, retrying until ``deadline``.

    Control planes may still be installing when a worker comes up, so unreachable endpoints are
    retried; a refusal (wrong token) is final.
    """
    ips = list(node_ips)
    endpoints = list(trustd_endpoints)
    if not endpoints:
        raise ValueError("talos stand-in: no trustd endpoints to ask for a server certificate")
    csr, key = certs.make_csr(hostname, ips)
    give_up = time.monotonic() + deadline
    while True:
        for endpoint in endpoints:
            try:
                crt = await request_certificate(endpoint, port, os_ca_crt, token, csr)
            except GRPCError as exc:
                if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT, Status.PERMISSION_DENIED):
                    raise
                log.info("talos stand-in: trustd %s: %s; retrying", endpoint, exc.status.name)
            except (TimeoutError, OSError, grpclib.exceptions.StreamTerminatedError) as exc:
                log.info("talos stand-in: trustd %s unreachable (%s); retrying", endpoint, type(exc).__name__)
            else:
                log.info("talos stand-in: trustd %s issued this node's server certificate", endpoint)
                return certs.ServerCert(crt, key)
        if time.monotonic() >= give_up:
            tried = ", ".join(endpoints)
            raise TimeoutError(f"talos stand-in: no trustd answered within {deadline:.0f}s: {tried}")
        await asyncio.sleep(interval)

