"""Helpers for the stand-in agent tests: Talos-shaped secrets and configs, a netboot-like HTTP
server, and stand-in machines (real agent processes with the dir platform on 127.x addresses)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from provisioner.talos import pki
from provisioner.talosapi import tls
from provisioner.talosapi.client import RetryPolicy, TalosClient

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
FAST_RETRY = RetryPolicy(attempts=2, initial_wait=0.05, max_wait=0.2, jitter=0.05)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Secrets:
    """The CAs a cluster's configs carry (Talos shapes: OS CA Ed25519, Kubernetes CA ECDSA P-256)."""

    os_ca: pki.KeyPair
    k8s_ca: pki.KeyPair
    token: str

    @classmethod
    def new(cls) -> Secrets:
        return cls(pki.new_ca("talos", "ed25519"), pki.new_ca("kubernetes", "ecdsa"), pki.random_token())

    def client(self, role: str = "os:admin") -> pki.KeyPair:
        return pki.new_client_cert(self.os_ca, role)


def machine_config(
    secrets: Secrets, *, kind: str, hostname: str, endpoint: str, disk: str = "/dev/sda"
) -> bytes:
    """A minimal v1alpha1 machine config with the fields the stand-in acts on (worker: no CA keys)."""
    assert secrets.os_ca.crt is not None and secrets.k8s_ca.crt is not None
    cp = kind == "controlplane"
    os_key = f"\n        key: {b64(secrets.os_ca.key)}" if cp else ""
    k8s_key = f"\n        key: {b64(secrets.k8s_ca.key)}" if cp else ""
    return f"""version: v1alpha1
debug: false
persist: true
machine:
    type: {kind}
    token: {secrets.token}
    ca:
        crt: {b64(secrets.os_ca.crt)}{os_key}
    certSANs: []
    network:
        hostname: {hostname}
    install:
        disk: {disk}
        image: ghcr.io/cozystack/cozystack/talos:v1.11.6
        wipe: false
cluster:
    clusterName: standin-test
    controlPlane:
        endpoint: {endpoint}
    ca:
        crt: {b64(secrets.k8s_ca.crt)}{k8s_key}
""".encode()


class Netboot:
    """A tiny stand-in for the tool's netboot HTTP service: configs by ``?uuid=``, kernel, initramfs."""

    def __init__(self) -> None:
        self.configs: dict[str, bytes] = {}
        self.kernel = os.urandom(4096)
        self.initrd = os.urandom(8192)
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                url = urlsplit(self.path)
                body: bytes | None = None
                if url.path == "/config":
                    uuid = parse_qs(url.query).get("uuid", [""])[0]
                    body = outer.configs.get(uuid)
                elif url.path == "/vmlinuz":
                    body = outer.kernel
                elif url.path == "/initramfs.zst":
                    body = outer.initrd
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def cmdline(self, config_query: str | None) -> str:
        args = [
            "talos.platform=metal",
            "console=ttyS0",
            "slab_nomerge",
            "pti=on",
            f"standin.kernel={self.base}/vmlinuz",
            f"standin.initrd={self.base}/initramfs.zst",
        ]
        if config_query is not None:
            args.append(f"talos.config={self.base}/config?{config_query}")
        return " ".join(args)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def loopback_prefix() -> str:
    """A random 127.a.b prefix so parallel runs and other suites' servers never collide."""
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}"


@dataclass
class Machine:
    """One stand-in machine: a directory with disks and a real agent process on ``address``."""

    root: Path
    address: str
    hostname: str
    uuid: str
    cmdline: str
    disks: tuple[str, ...] = ("sda", "sdb")
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "console.log"
        for d in self.disks:
            (self.root / "disks" / d).mkdir(parents=True, exist_ok=True)
        (self.root / "cmdline").write_text(self.cmdline + "\n")

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "provisioner.lab.standin.agent",
            "--platform",
            "dir",
            "--root",
            str(self.root),
            "--address",
            self.address,
            "--hostname",
            self.hostname,
            "--uuid",
            self.uuid,
            "--serial",
            f"SN-{self.hostname}",
            "--cmdline",
            str(self.root / "cmdline"),
            "--action-delay",
            "0.2",
            "--fetch-attempt-timeout",
            "2",
            "--fetch-total-timeout",
            "30",
            "--join-timeout",
            "120",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def stop(self) -> None:
        """Kill the agent and everything it started (etcd) by its own process group id."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # etcd shares the group; make sure it is gone too before the next test reuses ports.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def console(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def disk(self, name: str = "sda") -> Path:
        return self.root / "disks" / name

    def maintenance(self) -> TalosClient:
        return TalosClient.maintenance(self.address, timeout=5, retry=FAST_RETRY)

    def mtls(
        self, secrets: Secrets, client: pki.KeyPair | None = None, ca: bytes | None = None
    ) -> TalosClient:
        client = client or secrets.client()
        assert secrets.os_ca.crt is not None and client.crt is not None
        ctx = tls.mtls_client_context(ca or secrets.os_ca.crt, client.crt, client.key)
        return TalosClient(self.address, ctx, timeout=10, retry=FAST_RETRY)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: last error {last!r}")


def version(client: TalosClient) -> Any:
    async def call() -> Any:
        async with client:
            return await client.version()

    return run(call())
