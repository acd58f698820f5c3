"""Run the API server stand-in: TLS context, etcd client, handler, and the serve loop.

``serve`` is what ``python -m provisioner.lab.kube serve`` and the lab's control planes call. The
listening port is written to ``port_file`` once the server accepts connections, so a parent
process knows when (and where) it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from .api import KubeAPI
from .etcdgw import EtcdGateway
from .faults import KubeFaults
from .httpd import HttpServer

log = logging.getLogger("kube-stand-in")


@dataclass(frozen=True)
class ServerSettings:
    etcd: str  # http://host:port of etcd's client URL
    cert: Path  # serving certificate (PEM), signed by ``ca``
    key: Path
    ca: Path  # clients must present a certificate chained to this CA
    host: str = "127.0.0.1"
    port: int = 6443
    kubernetes_version: str = "v1.34.1"
    faults: KubeFaults = field(default_factory=KubeFaults)
    port_file: Path | None = None
    bookmark_interval: float = 5.0
    tokens: frozenset[str] = frozenset()  # bearer tokens accepted besides client certificates


def tls_context(cert: Path, key: Path, ca: Path, cert_optional: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(ca))
    # CERT_OPTIONAL still verifies a certificate that is presented (a wrong CA fails the handshake)
    ctx.verify_mode = ssl.CERT_OPTIONAL if cert_optional else ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def serve(settings: ServerSettings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when running as the main task)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    gw = EtcdGateway(settings.etcd, pool_size=32)
    api = KubeAPI(
        gw, settings.kubernetes_version, settings.faults, settings.bookmark_interval, tokens=settings.tokens
    )
    await api.start()
    http = HttpServer(
        api.handle, tls_context(settings.cert, settings.key, settings.ca, cert_optional=bool(settings.tokens))
    )
    port = await http.start(settings.host, settings.port)
    log.info(
        "kube stand-in: API server stand-in %s listening on https://%s:%d (etcd %s)",
        settings.kubernetes_version,
        settings.host,
        port,
        settings.etcd,
    )
    if settings.port_file is not None:
        tmp = settings.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(settings.port_file)
    try:
        await stop.wait()
    finally:
        log.info("kube stand-in: stopping")
        await http.close()
        await api.stop()
        await gw.close()
