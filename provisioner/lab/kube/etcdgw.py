"""An asyncio client for etcd's JSON gRPC gateway (``/v3/kv/*``, ``/v3/watch``), stdlib only.

The API server stand-in keeps every object in etcd, so this is its hot path: keep-alive HTTP/1.1
connections in a small pool (one request at a time per connection), keys and values base64 as the
gateway wants them, int64 fields arriving as JSON strings. Watches get a connection of their own and
read the gateway's stream of newline-separated JSON messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .httpd import skip_trailers


class EtcdGatewayError(Exception):
    """etcd answered with an error or could not be reached; ``code`` is the gRPC code when known."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdCompacted(EtcdGatewayError):
    """The requested revision has been compacted away (the API answers 410 Gone)."""


GRPC_OUT_OF_RANGE = 11
GRPC_UNAVAILABLE = 14  # etcd: "leader changed", "request timed out", "no leader"
RANGE_PATH = "/v3/kv/range"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that selects every key starting with ``prefix`` (keys here are ASCII)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


def _kv(doc: dict[str, Any]) -> KV:
    return KV(
        key=base64.b64decode(doc.get("key", "")).decode(),
        value=base64.b64decode(doc.get("value", "")),
        create_revision=int(doc.get("create_revision", 0)),
        mod_revision=int(doc.get("mod_revision", 0)),
        version=int(doc.get("version", 0)),
    )


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KV
    prev: KV | None


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            line = await reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(bytes(out), None)  # closed mid-body
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await skip_trailers(reader)
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.read()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = lines[0].split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        raise EtcdGatewayError(f"etcd answered a malformed status line {lines[0][:60]!r}")
    status = int(fields[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


def _raise_for(doc: dict[str, Any], status: int) -> None:
    message = str(doc.get("message") or doc.get("error") or f"HTTP {status}")
    code = int(doc.get("code", 0) or 0)
    if "compacted" in message or code == GRPC_OUT_OF_RANGE:
        raise EtcdCompacted(message, code)
    raise EtcdGatewayError(message, code)


class EtcdGateway:
    """A pooled client for one etcd endpoint, ``http://host:port``."""

    def __init__(self, endpoint: str, pool_size: int = 16, timeout: float = 10.0) -> None:
        hostport = endpoint.removeprefix("http://").rstrip("/")
        host, _, port = hostport.rpartition(":")
        self.host, self.port = host, int(port)
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._sem = asyncio.Semaphore(pool_size)

    async def close(self) -> None:
        for _, w in self._idle:
            w.close()
        self._idle.clear()

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` and return the decoded answer; raises EtcdGatewayError.

        Reads (``/v3/kv/range``) that etcd refuses as Unavailable ("leader changed", "request timed
        out" while a member is lost) are tried again until ``timeout``, as etcd's own Go client
        (clientv3's retry interceptor) does for immutable requests; writes are not, since a write
        that timed out may still have been applied."""
        if path != RANGE_PATH:
            return await self._call_once(path, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        pause = 0.05
        while True:
            try:
                return await self._call_once(path, body)
            except EtcdGatewayError as exc:
                if exc.code != GRPC_UNAVAILABLE or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _call_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        async with self._sem:
            for attempt in range(2):
                fresh = not self._idle
                try:
                    async with asyncio.timeout(self.timeout):  # cheaper than wait_for: no extra task
                        if fresh:
                            conn = await asyncio.open_connection(self.host, self.port)
                        else:
                            conn = self._idle.pop()
                        reader, writer = conn
                        writer.write(request)
                        status, headers = await _read_head(reader)
                        data = await _read_body(reader, headers)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    with contextlib.suppress(Exception):
                        conn[1].close()  # type: ignore[possibly-undefined]
                    if fresh or attempt:
                        raise EtcdGatewayError(f"etcd at {self.host}:{self.port}: {exc!r}") from None
                    continue  # a kept-alive connection the server closed: once more on a new one
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                else:
                    self._idle.append(conn)
                doc: dict[str, Any] = json.loads(data or b"{}")
                if status != 200:
                    _raise_for(doc, status)
                return doc
        raise AssertionError("unreachable")

    # --- kv --------------------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[KV | None, int]:
        """(the key's value or None, the store's current revision)."""
        doc = await self.call(RANGE_PATH, {"key": b64(key)})
        kvs = doc.get("kvs") or []
        return (_kv(kvs[0]) if kvs else None), int(doc["header"].get("revision", 0))

    async def range_prefix(
        self, prefix: str, start: str | None = None, limit: int = 0, revision: int = 0
    ) -> tuple[list[KV], int, bool]:
        """Keys under ``prefix`` from ``start`` (inclusive), at ``revision`` (0: now).

        Returns (kvs, revision read at, more keys remain)."""
        body: dict[str, Any] = {"key": b64(start or prefix), "range_end": prefix_end(prefix)}
        if limit:
            body["limit"] = str(limit)
        if revision:
            body["revision"] = str(revision)
        doc = await self.call(RANGE_PATH, body)
        return [_kv(k) for k in doc.get("kvs") or []], int(doc["header"]["revision"]), bool(doc.get("more"))

    async def count_prefix(self, prefix: str) -> int:
        doc = await self.call(
            RANGE_PATH, {"key": b64(prefix), "range_end": prefix_end(prefix), "count_only": True}
        )
        return int(doc.get("count", 0))

    async def create(self, key: str, value: bytes) -> int | None:
        """Put ``key`` only if it does not exist: its new revision, or None if it exists."""
        doc = await self.call(
            "/v3/kv/txn",
            {
                "compare": [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
            },
        )
        return int(doc["header"]["revision"]) if doc.get("succeeded") else None

    async def update(self, key: str, value: bytes, mod_revision: int) -> int | None:
        """Put ``key`` only if it is still at ``mod_revision``: the new revision, or None."""
        doc = await self.call(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
                ],
                "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
            },
        )
        return int(doc["header"]["revision"]) if doc.get("succeeded") else None

    async def put_if(self, key: str, value: bytes, mod_revision: int) -> tuple[int | None, KV | None]:
        """Put ``key`` if it is at ``mod_revision`` (0: absent). (new revision, None) on success, else
        (None, the key's current value or None): one round trip either way."""
        target = (
            {"target": "CREATE", "create_revision": "0"}
            if mod_revision == 0
            else {"target": "MOD", "mod_revision": str(mod_revision)}
        )
        doc = await self.call(
            "/v3/kv/txn",
            {
                "compare": [{"key": b64(key), "result": "EQUAL", **target}],
                "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
                "failure": [{"request_range": {"key": b64(key)}}],
            },
        )
        if doc.get("succeeded"):
            return int(doc["header"]["revision"]), None
        kvs = ((doc.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        return None, (_kv(kvs[0]) if kvs else None)

    async def delete(self, key: str, mod_revision: int) -> int | None:
        """Delete ``key`` if it is still at ``mod_revision``: the deletion's revision, or None."""
        doc = await self.call(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
                ],
                "success": [{"request_delete_range": {"key": b64(key)}}],
            },
        )
        return int(doc["header"]["revision"]) if doc.get("succeeded") else None

    async def compact(self, revision: int) -> None:
        await self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    async def current_revision(self) -> int:
        doc = await self.call(RANGE_PATH, {"key": b64("/"), "count_only": True})
        return int(doc["header"]["revision"])

    # --- watch -----------------------------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent] | int]:
        """Events under ``prefix`` from ``start_revision`` on, in batches; an ``int`` item is a
        progress revision (the watch is live at that revision). Raises EtcdCompacted when the start
        is too old. Closes its connection when the consumer stops iterating."""
        body = {
            "create_request": {
                "key": b64(prefix),
                "range_end": prefix_end(prefix),
                "start_revision": str(start_revision),
                "prev_kv": True,
            }
        }
        payload = json.dumps(body).encode()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (TimeoutError, OSError) as exc:
            raise EtcdGatewayError(f"etcd at {self.host}:{self.port}: {exc!r}") from None
        try:
            writer.write(
                (
                    f"POST /v3/watch HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
                ).encode()
                + payload
            )
            status, headers = await _read_head(reader)
            if status != 200:
                _raise_for(json.loads(await _read_body(reader, headers) or b"{}"), status)
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            buf = b""
            while True:
                if chunked:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        return
                    buf += await reader.readexactly(size)
                    await reader.readexactly(2)
                else:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if "error" in msg:
                        _raise_for(msg["error"], 500)
                    result = msg.get("result", {})
                    if result.get("compact_revision") and result.get("canceled"):
                        raise EtcdCompacted(f"revision {start_revision} has been compacted")
                    events = result.get("events")
                    if events:
                        yield [
                            WatchEvent(
                                type=e.get("type", "PUT"),
                                kv=_kv(e["kv"]),
                                prev=_kv(e["prev_kv"]) if e.get("prev_kv") else None,
                            )
                            for e in events
                        ]
                    elif "revision" in result.get("header", {}):
                        yield int(result["header"]["revision"])
        finally:
            writer.close()
