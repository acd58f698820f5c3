"""The HTTP server over real loopback sockets: files, Range, HEAD, ETag, traversal,
concurrency, and clients that are slow or malformed."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from provisioner.netboot.http import HTTPServer, directory_handler, parse_range, safe_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "root"
    d.mkdir()
    (d / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (d / "sub").mkdir()
    (d / "sub" / "a.txt").write_text("hello\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    (d / ".hidden").write_text("dotfile\n")
    os.symlink(tmp_path / "secret.txt", d / "escape")
    return d


@pytest.fixture
def server(root: Path):
    srv = HTTPServer("127.0.0.1", 0, directory_handler(root), client_timeout=2.0)
    srv.start()
    yield srv
    srv.stop()


def get(server: HTTPServer, path: str, method: str = "GET", headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def raw(server: HTTPServer, data: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_get_whole_file(server: HTTPServer, root: Path) -> None:
    resp, body = get(server, "/blob.bin")
    assert resp.status == 200
    assert body == (root / "blob.bin").read_bytes()
    assert resp.getheader("Accept-Ranges") == "bytes"
    assert resp.getheader("ETag")


def test_head_has_length_but_no_body(server: HTTPServer, root: Path) -> None:
    resp, body = get(server, "/blob.bin", "HEAD")
    assert resp.status == 200 and body == b""
    assert int(resp.getheader("Content-Length")) == (root / "blob.bin").stat().st_size


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=100-", 100, None),
        ("bytes=-5", -5, None),
        ("bytes=0-99999999", 0, None),
    ],
)
def test_range(server: HTTPServer, root: Path, spec: str, first: int, last: int | None) -> None:
    data = (root / "blob.bin").read_bytes()
    resp, body = get(server, "/blob.bin", headers={"Range": spec})
    assert resp.status == 206
    want = data[first:] if last is None else data[first : last + 1]
    assert body == want
    start = first if first >= 0 else len(data) + first
    assert resp.getheader("Content-Range") == f"bytes {start}-{start + len(want) - 1}/{len(data)}"


def test_unsatisfiable_range(server: HTTPServer, root: Path) -> None:
    size = (root / "blob.bin").stat().st_size
    resp, _ = get(server, "/blob.bin", headers={"Range": f"bytes={size}-"})
    assert resp.status == 416
    assert resp.getheader("Content-Range") == f"bytes */{size}"


def test_if_range_with_stale_etag_sends_everything(server: HTTPServer, root: Path) -> None:
    resp, body = get(server, "/blob.bin", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert resp.status == 200 and len(body) == (root / "blob.bin").stat().st_size


def test_etag_revalidation(server: HTTPServer, root: Path) -> None:
    resp, _ = get(server, "/sub/a.txt")
    etag = resp.getheader("ETag")
    resp2, body2 = get(server, "/sub/a.txt", headers={"If-None-Match": etag})
    assert resp2.status == 304 and body2 == b""
    time.sleep(0.01)
    (root / "sub" / "a.txt").write_text("changed!\n")
    resp3, body3 = get(server, "/sub/a.txt", headers={"If-None-Match": etag})
    assert resp3.status == 200 and body3 == b"changed!\n"
    assert resp3.getheader("ETag") != etag


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/escape",
        "/.hidden",
        "/sub/a.txt%00.bin",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ],
)
def test_no_path_traversal(server: HTTPServer, path: str) -> None:
    # raw request: http.client would not send some of these verbatim
    reply = raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status = reply.split(b"\r\n", 1)[0]
    assert b" 404 " in status, (path, status)
    assert b"outside the root" not in reply and b"root:" not in reply


def test_safe_join_accepts_inside_paths(root: Path) -> None:
    assert safe_join(root, "/sub/a.txt") == (root / "sub" / "a.txt").resolve()
    assert safe_join(root, "/sub/%61.txt") == (root / "sub" / "a.txt").resolve()
    assert safe_join(root, "/sub") is None  # a directory is not a file


def test_parse_range_edge_cases() -> None:
    assert parse_range("", 10) is None
    assert parse_range("bytes=0-1,3-4", 10) is None  # multiple ranges: whole file
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=5-2", 10) is None
    assert parse_range("bytes=-0", 10) == "unsatisfiable"
    assert parse_range("bytes=2-", 0) == "unsatisfiable"
    assert parse_range("bytes=-20", 10) == (0, 9)


def test_keep_alive_serves_several_requests(server: HTTPServer) -> None:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    for _ in range(3):
        conn.request("GET", "/sub/a.txt")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"hello\n"
    conn.close()


def test_concurrent_downloads(server: HTTPServer, root: Path) -> None:
    want = hashlib.sha256((root / "blob.bin").read_bytes()).hexdigest()
    results: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        _, body = get(server, "/blob.bin")
        with lock:
            results.append(hashlib.sha256(body).hexdigest())

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [want] * 16


def test_slow_and_malformed_clients_do_not_stall_others(server: HTTPServer, root: Path) -> None:
    # a client that opens connections and never finishes its request line...
    idle = [socket.create_connection(server.address) for _ in range(5)]
    for s in idle:
        s.sendall(b"GET /blob.bin HT")
    # ...one that starts a large download and never reads it...
    stuck = socket.create_connection(server.address)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /blob.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        # ...and garbage
        assert b" 400 " in raw(server, b"\x16\x03\x01 not http at all\r\n\r\n").split(b"\r\n", 1)[0]
        # a normal client is still served, completely
        resp, body = get(server, "/blob.bin")
        assert resp.status == 200 and body == (root / "blob.bin").read_bytes()
        # the silent client is cut off by the timeout (2 s here) instead of holding on forever
        idle[0].settimeout(10)
        assert idle[0].recv(100) == b""
    finally:
        for s in [*idle, stuck]:
            s.close()


def test_connection_cap_answers_503(root: Path) -> None:
    srv = HTTPServer("127.0.0.1", 0, directory_handler(root), client_timeout=5.0, max_clients=2)
    srv.start()
    held = [socket.create_connection(srv.address) for _ in range(2)]
    try:
        time.sleep(0.2)
        reply = raw(srv, b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503")
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_stop_returns_with_idle_keepalive_connections(root: Path) -> None:
    srv = HTTPServer("127.0.0.1", 0, directory_handler(root), client_timeout=60.0)
    srv.start()
    conn = http.client.HTTPConnection(*srv.address, timeout=10)
    conn.request("GET", "/sub/a.txt")
    conn.getresponse().read()
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 5
    conn.close()
