"""Benchmark: the netboot HTTP server against nginx, 32 concurrent 100 MB downloads.

Both servers run in the same run on 127.0.0.1, each on a free port, serving the same file
from the same directory; the client is the same for both (one ``curl`` process per
download, writing to /dev/null). nginx (Debian nginx-light) is started by this script with
a temporary config and stopped at the end; our server runs in its own process
(``python -m provisioner.netboot.http``) so the clients do not share its interpreter.
Prints aggregate throughput of each (best of ROUNDS) and the ratio. Target: >= 0.8.
Run: `make bench-http` (or `python benchmarks/bench_http.py [CLIENTS] [MB] [ROUNDS]`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NGINX_CONF = """\
worker_processes auto;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 15;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def run_clients(url: str, clients: int, size: int) -> float:
    """Wall seconds for ``clients`` concurrent full downloads; fails loudly on a short one."""
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url],
            stdout=subprocess.PIPE,
        )
        for _ in range(clients)
    ]
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.monotonic() - t0
    for p, out in zip(procs, outs, strict=True):
        if p.returncode != 0 or int(out or 0) != size:
            raise RuntimeError(f"a download from {url} failed (rc {p.returncode}, {out!r} bytes)")
    return elapsed


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    mb = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    os.chmod(tmp, 0o755)  # nginx workers run as www-data/nobody
    procs: list[subprocess.Popen[bytes]] = []
    try:
        root = tmp / "root"
        root.mkdir(mode=0o755)
        blob = root / "initramfs.bin"
        with open(blob, "wb") as fh:
            chunk = os.urandom(1 << 20)
            for _ in range(mb):
                fh.write(chunk)
        os.chmod(blob, 0o644)
        size = blob.stat().st_size
        with open(blob, "rb") as fh:  # warm the page cache so both servers read from memory
            while fh.read(1 << 22):
                pass

        ours_port, nginx_port = free_port(), free_port()
        ours = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "provisioner.netboot.http",
                str(root),
                "--host",
                "127.0.0.1",
                "--port",
                str(ours_port),
            ],
            stdout=subprocess.DEVNULL,
        )
        procs.append(ours)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port, root=root))
        ngx = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL)
        procs.append(ngx)
        wait_port(ours_port)
        wait_port(nginx_port)

        total = clients * size
        best = {"provisioner": float("inf"), "nginx": float("inf")}
        for _ in range(rounds):  # interleaved, so background load hits both alike
            best["nginx"] = min(
                best["nginx"], run_clients(f"http://127.0.0.1:{nginx_port}/initramfs.bin", clients, size)
            )
            best["provisioner"] = min(
                best["provisioner"], run_clients(f"http://127.0.0.1:{ours_port}/initramfs.bin", clients, size)
            )
        mib = total / (1 << 20)
        rate = {k: mib / v for k, v in best.items()}
        print(f"bench-http: {clients} concurrent clients x {mb} MiB over loopback, best of {rounds} rounds")
        print(f"  nginx        {rate['nginx']:9.1f} MiB/s  ({best['nginx']:.2f} s)")
        print(f"  provisioner  {rate['provisioner']:9.1f} MiB/s  ({best['provisioner']:.2f} s)")
        ratio = rate["provisioner"] / rate["nginx"]
        print(f"  ratio        {ratio:9.2f}  (target >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'})")
        return 0
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
