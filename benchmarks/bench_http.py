"""Benchmark: the netboot HTTP service's production route against nginx, 32 concurrent 100 MB downloads.

Comparison: nginx (Debian nginx-light, sendfile on, access log off) serving the same file from
the same directory to the same clients (one ``curl`` process per download, to /dev/null), in the
same run, rounds interleaved so background load hits both alike. Ours is what `up` serves nodes
with: ``provisioner.netboot.http.HTTPServer`` with ``provisioner.netboot.routes.NetbootRoutes``
answering ``/assets/<file>`` for a loaded inventory, so every GET appends its fsync'd
``asset.download`` event to the state directory's event log (the run checks the events are
there). It runs in its own process (this script with ``--serve``) so the clients do not share
its interpreter. Figure: aggregate throughput ratio ours / nginx, best of ROUNDS each.
Target: >= 0.8; exits 1 when missed.
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

TARGET = 0.8
CLIENT_IP = "127.0.0.2"  # the node's address: clients download from it, as a booting node would
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
            [
                "curl",
                "-sS",
                "--fail",
                "--interface",
                CLIENT_IP,
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                url,
            ],
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


SITE_YAML = """\
cluster: {{name: benchhttp, bundle: distro-full}}
networks:
  management: {{subnet: 127.0.0.0/8, gateway: 127.0.0.254}}
  netboot: {{server: 127.0.0.1, http_port: {port}}}
racks: [{{name: r1}}]
nodes:
  - name: n1
    rack: r1
    role: controlplane
    ip: {client}
    boot: {{mac: "52:54:00:00:00:01"}}
    data_disks: [/dev/sdb]
    bmc: {{protocol: ipmi, address: 127.0.0.3, username: admin, password: "env:BENCH_HTTP_UNUSED"}}
"""


def serve_production(root: Path, port: int, state: Path) -> int:
    """The server side of the run: NetbootRoutes + HTTPServer exactly as NetbootService wires them
    (minus dnsmasq), the assets directory being ``root``; serves until SIGTERM."""
    import threading

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from provisioner.events import EventLog
    from provisioner.inventory import load_inventory
    from provisioner.netboot.http import HTTPServer
    from provisioner.netboot.ipxe import Endpoint
    from provisioner.netboot.routes import NetbootRoutes
    from provisioner.state import StateStore

    inv = state / "site.yaml"
    inv.write_text(SITE_YAML.format(port=port, client=CLIENT_IP))
    site = load_inventory(inv).site
    store = StateStore(site.state_dir)
    routes = NetbootRoutes(site, store, EventLog(store.events_path), root, site.nodes)
    server = HTTPServer("127.0.0.1", port, routes)
    routes.update(site, site.nodes, endpoint=Endpoint.for_site(site))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    print(store.events_path, flush=True)
    done.wait()
    server.stop()
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        return serve_production(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
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
        state = tmp / "state"
        state.mkdir()
        ours = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(root), str(ours_port), str(state)],
            stdout=subprocess.PIPE,
        )
        procs.append(ours)
        assert ours.stdout is not None
        events_path = Path(ours.stdout.readline().decode().strip())
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
                best["provisioner"],
                run_clients(f"http://127.0.0.1:{ours_port}/assets/initramfs.bin", clients, size),
            )
        mib = total / (1 << 20)
        rate = {k: mib / v for k, v in best.items()}
        print(f"bench-http: {clients} concurrent clients x {mb} MiB over loopback, best of {rounds} rounds")
        print(f"  nginx        {rate['nginx']:9.1f} MiB/s  ({best['nginx']:.2f} s)")
        print(f"  provisioner  {rate['provisioner']:9.1f} MiB/s  ({best['provisioner']:.2f} s)")
        ratio = rate["provisioner"] / rate["nginx"]
        logged = sum(1 for line in events_path.read_text().splitlines() if '"asset.download"' in line)
        print(f"  events       {logged} asset.download events appended (expected {clients * rounds})")
        if logged != clients * rounds:
            print("bench-http: the production route did not log one event per GET", file=sys.stderr)
            return 1
        print(f"bench-http: {ratio:.2f}x nginx throughput via the production route (target >= {TARGET:g})")
        return 0 if ratio >= TARGET else 1
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
