"""A small asyncio HTTP/1.1 server over mutual TLS, enough for Kubernetes clients.

Keep-alive, ``Content-Length`` and chunked request bodies, chunked streaming answers (watches). ALPN
offers only ``http/1.1``, so Go clients (kubectl) and httpx (lightkube) stay on HTTP/1.1. A client
certificate must chain to the configured CA: a certificate from another CA fails the handshake, as
with the real API server. ``Request.client_cert`` says whether one was presented (the server may also
allow bearer tokens, then certificates are optional at the TLS layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("kube-stand-in.http")

MAX_BODY = 64 * 1024 * 1024
PHRASES = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}


class ResetConnection(Exception):
    """Raised by a handler to drop the connection without answering (fault injection)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client_cert: bool = False  # the TLS peer presented a certificate the CA verified


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Stream:
    """A chunked answer being written; handlers that stream get one and return None."""

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        self._writer = writer
        self._reader = reader
        self.started = False

    async def start(self, status: int = 200, content_type: str = "application/json") -> None:
        self._writer.write(
            (
                f"HTTP/1.1 {status} {PHRASES.get(status, 'OK')}\r\nContent-Type: {content_type}\r\n"
                "Transfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n"
            ).encode()
        )
        self.started = True
        await self._writer.drain()

    async def send(self, data: bytes) -> None:
        self._writer.write(b"%x\r\n%b\r\n" % (len(data), data))
        await self._writer.drain()

    async def finish(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    async def closed(self) -> None:
        """Returns when the client closes its side (it sends nothing more while streaming)."""
        with contextlib.suppress(Exception):
            while await self._reader.read(4096):
                pass


Handler = Callable[[Request, Stream], Awaitable[Response | None]]


async def skip_trailers(reader: asyncio.StreamReader) -> None:
    """Consume a chunked body's trailer section, up to and including its empty line.

    A message may carry trailer fields after its last chunk (RFC 9112 7.1.2); etcd's gateway does on
    its error answers (``Grpc-Trailer-Content-Type``). Left unread, they and their blank line would
    open the next message on the kept-alive connection (the stand-in's etcd client once read a
    status line of '' there)."""
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n > MAX_BODY:
            raise ValueError("request body too large")
        body = await reader.readexactly(n)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await skip_trailers(reader)
                break
            parts += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(parts) > MAX_BODY:
                raise ValueError("request body too large")
        body = bytes(parts)
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    return Request(method.upper(), unquote(url.path), query, headers, body)


def _head(resp: Response) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in resp.headers.items())
    return (
        f"HTTP/1.1 {resp.status} {PHRASES.get(resp.status, 'OK')}\r\nContent-Type: {resp.content_type}\r\n"
        f"Content-Length: {len(resp.body)}\r\nCache-Control: no-cache, private\r\n{extra}\r\n"
    ).encode()


class HttpServer:
    """Serves ``handler`` on ``host:port`` over TLS (or plain TCP when ``ssl_ctx`` is None)."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._serve, host, port, ssl=self.ssl_ctx, backlog=1024)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.connections):
                w.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                try:
                    req = await _read_request(reader)
                except (ValueError, asyncio.IncompleteReadError, ConnectionError):
                    writer.write(_head(Response(400, b"")) if not writer.is_closing() else b"")
                    break
                if req is None:
                    break
                req.client_cert = bool(writer.get_extra_info("peercert"))
                stream = Stream(writer, reader)
                try:
                    resp = await self.handler(req, stream)
                except ResetConnection:
                    writer.transport.abort()
                    return
                if resp is None:
                    break  # a stream: the connection is done once it ends
                writer.write(_head(resp) + resp.body)
                await writer.drain()
                if req.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("kube stand-in: connection handler failed")
        finally:
            self.connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
