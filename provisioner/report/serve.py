"""``report --serve``: the same page on localhost, kept current while ``up`` runs.

The server answers two paths only: ``/`` (the page) and ``/version`` (a fingerprint of the
state files the page is built from). The served page polls ``/version`` and reloads when it
changes, so it refreshes as events arrive without rebuilding anything while nothing
happens. Nothing else in the state directory is reachable, and the page itself is built
from the same secret-free data as the file.
"""

from __future__ import annotations

import errno
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import InputError, ProvisionerError
from ..layout import StateLayout
from .collect import collect, fingerprint
from .render import page
from .view import SiteView

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
POLL_MS = 1000


class _PageCache:
    """The page for the current fingerprint, rebuilt at most once per change."""

    def __init__(self, view: SiteView, layout: StateLayout, poll_ms: int) -> None:
        self.view, self.layout, self.poll_ms = view, layout, poll_ms
        self._lock = threading.Lock()
        self._version: str | None = None
        self._page = b""

    def version(self) -> str:
        return fingerprint(self.layout)

    def page(self) -> tuple[int, bytes]:
        with self._lock:
            version = self.version()
            if version != self._version:
                try:
                    html = page.render(collect(self.view, self.layout), version, self.poll_ms)
                except ProvisionerError as exc:  # a malformed record: say which, keep serving
                    return HTTPStatus.INTERNAL_SERVER_ERROR, _error_page(str(exc), version, self.poll_ms)
                self._version, self._page = version, html.encode()
            return HTTPStatus.OK, self._page


def _error_page(message: str, version: str, poll_ms: int) -> bytes:
    from html import escape

    return (
        f'<!DOCTYPE html><html data-version="{escape(version)}"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>report: error</title></head>'
        "<body><h1>The report cannot be built</h1>"
        f"<p>{escape(message)}</p>"
        f"{page.LIVE_SCRIPT % (poll_ms, poll_ms)}</body></html>"
    ).encode()


def _handler(cache: _PageCache) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "provisioner-report"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                status, body = cache.page()
                self._send(status, body, "text/html; charset=utf-8")
            elif path == "/version":
                self._send(HTTPStatus.OK, cache.version().encode(), "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


class ReportServer:
    """A threaded HTTP server for the live page; ``port=0`` picks a free port."""

    def __init__(
        self,
        view: SiteView,
        layout: StateLayout,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        poll_ms: int = POLL_MS,
    ) -> None:
        try:
            self.httpd = ThreadingHTTPServer((host, port), _handler(_PageCache(view, layout, poll_ms)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(
                    f"--port {port}: {host}:{port} is already in use; choose another port"
                ) from None
            # No such local address, a name that does not resolve, a privileged port...
            raise InputError(
                f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}"
            ) from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> ReportServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="report-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()

    def __enter__(self) -> ReportServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
