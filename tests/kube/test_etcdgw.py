"""The API stand-in's etcd client (``provisioner/lab/kube/etcdgw.py``) on the wire and across an etcd
leader change: what etcd's JSON gateway really sends when a member is lost.

The wire tests replay, from a loopback server, the bytes etcd 3.4's gateway sends for an error
(captured from a 3-member cluster whose leader was stopped): a chunked body with a declared trailer
field. The cluster test stops the leader of a real 3-member etcd under load.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.lab.kube.etcdgw import GRPC_UNAVAILABLE, EtcdGateway, EtcdGatewayError, b64
from provisioner.lab.kube.host import free_port
from provisioner.lab.standin.etcd import Etcd, EtcdSettings

LEADER_CHANGED = json.dumps(
    {"error": "etcdserver: leader changed", "message": "etcdserver: leader changed", "code": 14}
).encode()


def _error_answer(body: bytes = LEADER_CHANGED) -> bytes:
    """etcd 3.4's gateway error: 503, chunked, one declared trailer field after the last chunk."""
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Access-Control-Allow-Origin: *\r\n"
        b"Content-Type: application/json\r\n"
        b"Trailer: Grpc-Trailer-Content-Type\r\n"
        b"Date: Thu, 03 Dec 2026 16:23:24 GMT\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n"
    )


def _ok_answer(doc: dict[str, object]) -> bytes:
    body = json.dumps(doc).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class ScriptedGateway:
    """A loopback HTTP/1.1 server that answers each request with the next of ``answers``, keeping
    connections alive; it records how many connections and requests it saw."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.paths: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
                await reader.readexactly(length)
                self.paths.append(lines[0].split(" ")[1])
                writer.write(self.answers.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            writer.close()


KV_DOC = {
    "header": {"revision": "7"},
    "kvs": [
        {"key": b64("/k"), "value": b64("v"), "create_revision": "5", "mod_revision": "7", "version": "2"}
    ],
    "count": "1",
}


def test_a_trailer_after_an_error_does_not_corrupt_the_next_answer_on_the_connection() -> None:
    """The blank line that ends the trailer section belongs to the error answer: the next request
    on the same kept-alive connection reads a clean status line (it read '' before the fix)."""

    async def run() -> tuple[EtcdGatewayError, dict[str, object], ScriptedGateway]:
        script = ScriptedGateway(
            [_error_answer(), _ok_answer({"header": {"revision": "8"}, "succeeded": True})]
        )
        async with script as url:
            gw = EtcdGateway(url, pool_size=1)
            with pytest.raises(EtcdGatewayError) as err:
                await gw.create("/k", b"v")
            doc = await gw.call("/v3/kv/txn", {"compare": [], "success": []})
            await gw.close()
        return err.value, doc, script

    error, doc, script = asyncio.run(run())
    assert str(error) == "etcdserver: leader changed" and error.code == GRPC_UNAVAILABLE
    assert doc == {"header": {"revision": "8"}, "succeeded": True}
    assert script.connections == 1, "the second request should reuse the kept-alive connection"


def test_a_read_refused_as_unavailable_is_tried_again() -> None:
    async def run() -> tuple[object, ScriptedGateway]:
        script = ScriptedGateway([_error_answer(), _error_answer(), _ok_answer(KV_DOC)])
        async with script as url:
            gw = EtcdGateway(url, pool_size=1)
            got = await gw.get("/k")
            await gw.close()
        return got, script

    (kv, revision), script = asyncio.run(run())  # type: ignore[misc]
    assert kv is not None and kv.value == b"v" and kv.mod_revision == 7 and revision == 7
    assert script.paths == ["/v3/kv/range"] * 3


def test_a_write_refused_as_unavailable_is_not_repeated() -> None:
    """A write that timed out may have been applied: it is never sent twice."""

    async def run() -> tuple[EtcdGatewayError, ScriptedGateway]:
        script = ScriptedGateway(
            [_error_answer(), _ok_answer({"header": {"revision": "9"}, "succeeded": True})]
        )
        async with script as url:
            gw = EtcdGateway(url, pool_size=1)
            with pytest.raises(EtcdGatewayError) as err:
                await gw.update("/k", b"v2", 7)
            await gw.close()
        return err.value, script

    error, script = asyncio.run(run())
    assert error.code == GRPC_UNAVAILABLE
    assert script.paths == ["/v3/kv/txn"]


def test_a_read_gives_up_at_its_timeout() -> None:
    async def run() -> tuple[EtcdGatewayError, float, ScriptedGateway]:
        script = ScriptedGateway([_error_answer()] * 100)
        async with script as url:
            gw = EtcdGateway(url, pool_size=1, timeout=0.5)
            start = time.monotonic()
            with pytest.raises(EtcdGatewayError) as err:
                await gw.get("/k")
            took = time.monotonic() - start
            await gw.close()
        return err.value, took, script

    error, took, script = asyncio.run(run())
    assert error.code == GRPC_UNAVAILABLE
    assert took <= 0.8
    assert 2 <= len(script.paths) < 100


# --- a real 3-member etcd whose leader stops -------------------------------------------------------


def _status(url: str) -> dict[str, object]:
    req = urllib.request.Request(f"{url}/v3/maintenance/status", data=b"{}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as answer:
        doc: dict[str, object] = json.loads(answer.read())
    return doc


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[list[Etcd]]:
    """Three members formed as the lab's control planes form them (``lab/standin/etcd``: bootstrap
    one, the others join as learners and are promoted), with etcd's default 100/1000 ms timing."""
    timing = (("heartbeat-interval", "100"), ("election-timeout", "1000"))
    members = [
        Etcd(
            EtcdSettings(
                name=f"m{i}",
                address="127.0.0.1",
                data_dir=tmp_path / f"m{i}",
                log_path=tmp_path / f"m{i}.log",
                client_port=free_port(),
                peer_port=free_port(),
                extra_args=timing,
            )
        )
        for i in range(3)
    ]
    try:
        members[0].bootstrap(timeout=60)
        for m in members[1:]:
            assert m.join([members[0].s.client_url], timeout=60, interval=0.2)
        yield members
    finally:
        for m in members:
            if m._proc is not None:
                m._proc.send_signal(signal.SIGCONT)
            m.stop()


def test_reads_survive_a_leader_change_of_a_real_etcd(
    etcd_cluster: list[Etcd],
) -> None:
    """The leader is frozen (SIGSTOP) for 3 s while 12 clients read and write through the two other
    members: every read answers (after the new leader takes over); writes may fail with etcd's own
    Unavailable errors, and nothing fails with anything else."""
    statuses = [_status(m.s.client_url) for m in etcd_cluster]
    leader = next(
        m._proc
        for m, st in zip(etcd_cluster, statuses, strict=True)
        if st["leader"] == st["header"]["member_id"]  # type: ignore[index]
    )
    assert leader is not None
    others = [m.s.client_url for m in etcd_cluster if m._proc is not leader]

    async def run() -> tuple[int, Counter[str], Counter[str]]:
        gws = [EtcdGateway(u, pool_size=6) for u in others]
        read_errors: Counter[str] = Counter()
        write_errors: Counter[str] = Counter()
        stop = asyncio.Event()
        done = 0

        async def client(gw: EtcdGateway, n: int) -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    kv, _ = await gw.get(f"/t/{n}")
                    await gw.range_prefix("/t/")
                except EtcdGatewayError as exc:
                    read_errors[str(exc)] += 1
                    continue
                try:
                    await gw.put_if(f"/t/{n}", b"x" * 100, kv.mod_revision if kv else 0)
                except EtcdGatewayError as exc:
                    write_errors[f"{exc.code}: {exc}"] += 1
                    await asyncio.sleep(0.05)
                done += 1

        tasks = [asyncio.create_task(client(gws[n % 2], n)) for n in range(12)]
        await asyncio.sleep(1)
        leader.send_signal(signal.SIGSTOP)
        await asyncio.sleep(3)
        leader.send_signal(signal.SIGCONT)
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*tasks)
        for gw in gws:
            await gw.close()
        return done, read_errors, write_errors

    done, read_errors, write_errors = asyncio.run(run())
    assert done > 100
    assert not read_errors, f"reads failed across the leader change: {dict(read_errors)}"
    assert all(k.startswith(f"{GRPC_UNAVAILABLE}: etcdserver: ") for k in write_errors), dict(write_errors)


def test_the_api_stand_in_reads_a_chunked_request_with_trailers_and_keeps_the_connection() -> None:
    """The same rule on the server side (``httpd``): a client's chunked request with a trailer field,
    then a second request on the connection; both reach the handler whole."""
    from provisioner.lab.kube.httpd import HttpServer, Request, Response, Stream

    seen: list[tuple[str, bytes]] = []

    async def handler(req: Request, stream: Stream) -> Response:
        seen.append((req.path, req.body))
        return Response(200, b"{}")

    async def run() -> bytes:
        server = HttpServer(handler, None)
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Check\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Check: 1\r\n\r\n"
            b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
        )
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2 or not answers.endswith(b"{}"):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break  # the server closed the connection
            answers += chunk
        writer.close()
        await server.close()
        return answers

    answers = asyncio.run(run())
    assert seen == [("/first", b"hello"), ("/second", b"ok")]
    assert answers.count(b"HTTP/1.1 200 ") == 2
