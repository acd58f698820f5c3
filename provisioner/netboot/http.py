"""A small HTTP/1.1 file server built for network boot: zero-copy, bounded, threaded.

Nodes download a ~100 MB initramfs each, many at once, so files go out with
``sendfile(2)`` (``socket.sendfile``) straight from the page cache; Range, HEAD and
ETag/If-None-Match are honoured so iPXE, curl and Talos can resume and revalidate. One
thread per connection with a socket timeout on every read and write means a slow or
malformed client only ever holds its own thread; the number of connections is capped
(503 beyond it). Routing is not done here: a ``Handler`` turns a ``Request`` into a
``Reply`` (bytes, or a file for this module to send).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 15.0  # seconds a client may stay silent (reading the request or draining a send)
DEFAULT_MAX_CLIENTS = 256


@dataclass(frozen=True)
class Request:
    method: str  # GET or HEAD
    path: str  # decoded path, no query
    query: dict[str, str]
    client_ip: str
    headers: dict[str, str]  # lower-case names


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # when set, the file is sent (Range/ETag apply) instead of body

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
        return cls(status, text.encode(), content_type, {"Cache-Control": "no-store"})


Handler = Callable[[Request], Reply]


def safe_join(root: Path, url_path: str) -> Path | None:
    """The regular file ``url_path`` names under ``root``, or None.

    Refuses anything that could leave the root: ``..`` and hidden segments, backslashes,
    NUL bytes, and symlinks resolving outside it.
    """
    raw = unquote(url_path)
    if "\x00" in raw or "\\" in raw:
        return None
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or any(p.startswith(".") for p in parts):
        return None
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, *parts))
    if not real.startswith(root_real + os.sep) or not os.path.isfile(real):
        return None
    return Path(real)


def etag_of(st: os.stat_result) -> str:
    """Changes whenever the file is replaced (inode) or rewritten (size, mtime)."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """``(first, last)`` inclusive for one satisfiable byte range; None to send the whole
    file (no header, several ranges, or syntax we ignore); ``"unsatisfiable"`` for 416."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_s == "":
            suffix = int(last_s)
            if suffix <= 0:
                return "unsatisfiable"
            return (max(0, size - suffix), size - 1) if size else "unsatisfiable"
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        return "unsatisfiable"
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "provisioner-netboot"
    sys_version = ""
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.client_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        client_ip = self.client_address[0].removeprefix("::ffff:")
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, split.path, query, client_ip, headers)
        try:
            reply = self.server.handler(req)
        except Exception:  # a bug in a route must not kill the server
            log.exception("handler failed for %s %s", self.command, split.path)
            reply = Reply.text(500, "internal error\n")
        if reply.file is not None:
            self._send_file(reply, head, headers)
        else:
            self._send_bytes(reply, head)

    def _send_bytes(self, reply: Reply, head: bool) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(reply.body)

    def _send_file(self, reply: Reply, head: bool, headers: dict[str, str]) -> None:
        assert reply.file is not None
        try:
            fh = open(reply.file, "rb")  # noqa: SIM115 - closed below, after sendfile
        except OSError:
            self._send_bytes(Reply.text(404, "not found\n"), head)
            return
        with fh:
            st = os.fstat(fh.fileno())
            size, etag = st.st_size, etag_of(st)
            common = {
                "ETag": etag,
                "Last-Modified": formatdate(st.st_mtime, usegmt=True),
                "Accept-Ranges": "bytes",
                **reply.headers,
            }
            inm = headers.get("if-none-match")
            if inm is not None and _etag_matches(inm, etag):
                self.send_response(304)
                for k, v in common.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            rng = parse_range(headers.get("range", ""), size)
            if_range = headers.get("if-range")
            if rng is not None and if_range is not None and if_range.strip() != etag:
                rng = None  # the client's copy is stale: send it all
            if rng == "unsatisfiable":
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(rng, tuple):
                offset, count = rng[0], rng[1] - rng[0] + 1
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {rng[0]}-{rng[1]}/{size}")
            else:
                offset, count = 0, size
                self.send_response(200)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(count))
            for k, v in common.items():
                self.send_header(k, v)
            self.end_headers()
            if head or count == 0:
                return
            try:
                sent = self.connection.sendfile(fh, offset, count)
            except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
                log.debug("%s: transfer of %s aborted: %s", self.client_address[0], reply.file, exc)
                self.close_connection = True
                return
            if sent != count:  # the file shrank under us: the framing is broken, drop the connection
                self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Handler, client_timeout: float, max_clients: int):
        self.handler = handler
        self.client_timeout = client_timeout
        self._slots = threading.BoundedSemaphore(max_clients)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def drop_connections(self) -> None:
        """Wake every connection thread so shutdown never waits on an idle keep-alive."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class HTTPServer:
    """The server on its own thread: ``start()``, ``stop()``, ``address``."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        client_timeout: float = DEFAULT_TIMEOUT,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self._server = _Server((host, port), handler, client_timeout, max_clients)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def set_handler(self, handler: Handler) -> None:
        self._server.handler = handler

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="netboot-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.drop_connections()
        self._server.server_close()

    def __enter__(self) -> HTTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def directory_handler(root: Path) -> Handler:
    """Serve the files under ``root`` (the benchmark and ad-hoc use)."""

    def handle(req: Request) -> Reply:
        path = safe_join(root, req.path)
        if path is None:
            return Reply.text(404, "not found\n")
        return Reply(file=path, content_type="application/octet-stream")

    return handle


def main(argv: list[str] | None = None) -> int:
    """``python -m provisioner.netboot.http DIR [--host H] [--port P]``: serve a directory."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    server = HTTPServer(args.host, args.port, directory_handler(args.root))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"serving {args.root} on http://{server.address[0]}:{server.address[1]}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
