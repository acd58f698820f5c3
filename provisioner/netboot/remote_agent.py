"""The netboot agent that runs on a rack's boot server (``provisioner netboot push``).

It is uploaded in ``agent.zip`` together with the few stdlib-only modules it needs
(``http``, ``events``, ``fsutil``, ``childguard``, ``leasehook``): a boot server needs
``python3`` (3.10+) and, for DHCP, dnsmasq and ipxe, nothing from PyPI. Everything
site-specific was decided by the tool and written into ``manifest.json`` (the answers
for ``/boot.ipxe`` and for each node's ``/node.ipxe``, MAC/UUID/IP of the rack's nodes);
the agent applies the same rules as ``routes.NetbootRoutes``: a machine config only to
the node's own address, the install script only to selected, not-installed nodes, an
event for every decision, appended to ``events.jsonl`` which the tool pulls back.

``python3 -m provisioner.netboot.remote_agent --dir DIR start|stop|status|serve|follow``;
``start`` detaches ``serve`` (its own session, so it outlives the SSH connection) and
waits until it is serving or has failed; ``stop`` ends it and dnsmasq with it. ``follow``
(``remote_follow``) is the live link `up` keeps open: events out, node-state changes in; the
routes read those changes on every request, so a node installed since the push boots from disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..events import ASSET_DOWNLOAD, CONFIG_DENIED, CONFIG_FETCH, IPXE_SCRIPT, IPXE_UNKNOWN, EventLog
from ..fsutil import atomic_write
from ..layout import StateLayout
from .childguard import die_with_parent
from .http import HTTPServer, Reply, Request, safe_join
from .proxylog import ProxyLogFollower
from .remote_follow import follow, read_node_states
from .rules import config_requester, identify, normalise_mac, normalise_uuid

MANIFEST = "manifest.json"
STATE = "agent.json"
LOG = "agent.log"
IPXE_TYPE = "text/plain; charset=utf-8"
IPXE_DIR = Path("/usr/lib/ipxe")
IPXE_NEEDED = ("undionly.kpxe", "snponly.efi")


class AgentRoutes:
    """``NetbootRoutes`` over a manifest instead of a live site and state store."""

    def __init__(self, root: Path, manifest: dict[str, Any], events: EventLog) -> None:
        self.root = root
        self.events = events
        self.boot_script: str = manifest["boot_ipxe"]
        self.nodes: list[dict[str, Any]] = manifest["nodes"]
        self.by_mac = {n["mac"]: n for n in self.nodes}
        self.by_uuid = {n["uuid"]: n for n in self.nodes if n.get("uuid")}
        self.by_ip = {n["ip"]: n for n in self.nodes}
        self.assets_dir = root / "assets"
        self.layout = StateLayout(root)  # the bundle is laid out like a state directory
        self.asset_files: list[str] = manifest.get("asset_files", [])

    def __call__(self, req: Request) -> Reply:
        if req.path == "/boot.ipxe":
            return Reply.text(200, self.boot_script, IPXE_TYPE)
        if req.path == "/node.ipxe":
            return self.node_script(req)
        if req.path == "/config":
            return self.config(req)
        if req.path.startswith("/assets/"):
            return self.asset(req)
        return Reply.text(404, "not found\n")

    def live(self, node: dict[str, Any] | None) -> dict[str, Any] | None:
        """The manifest's answer, overruled by a node-state change the tool sent since the push
        (an installed node gets the boot-from-disk script and no config)."""
        if node is None or node["answer"] != "install":
            return node
        if not read_node_states(self.root).get(node["name"], {}).get("installed"):
            return node
        return {**node, "answer": "local-disk", "reason": "installed", "script": node.get("disk_script", "")}

    def node_script(self, req: Request) -> Reply:
        mac = normalise_mac(req.query.get("mac", ""))
        uuid = normalise_uuid(req.query.get("uuid", ""))
        node = self.live(identify(self.by_mac, self.by_uuid, mac, uuid))
        ident = {
            "mac": mac or req.query.get("mac"),
            "uuid": uuid or req.query.get("uuid"),
            "serial": req.query.get("serial") or None,
            "ip": req.client_ip,
        }
        if node is None:
            self.events.append(IPXE_UNKNOWN, None, "unknown", **ident)
            return Reply.text(404, f"unknown machine mac={ident['mac']} uuid={ident['uuid']}\n")
        if node["answer"] != "install":
            self.events.append(IPXE_SCRIPT, node["name"], "local-disk", reason=node["reason"], **ident)
            return Reply.text(200, node["script"], IPXE_TYPE)
        missing = [f for f in self.asset_files if not (self.assets_dir / f).is_file()]
        if missing:
            reason = f"assets missing: {', '.join(missing)}"
            self.events.append(IPXE_SCRIPT, node["name"], "error", reason=reason, **ident)
            return Reply.text(503, f"Talos assets missing on the server: {', '.join(missing)}\n")
        self.events.append(IPXE_SCRIPT, node["name"], "install", **ident)
        return Reply.text(200, node["script"], IPXE_TYPE)

    def config(self, req: Request) -> Reply:
        uuid = normalise_uuid(req.query.get("uuid", ""))
        ident = {"uuid": uuid or req.query.get("uuid"), "ip": req.client_ip}
        node, denied = config_requester(
            self.by_uuid, self.by_ip, uuid, req.client_ip, lambda n: n["ip"], lambda n: n.get("uuid")
        )
        node = self.live(node)
        if denied is not None or node is None:
            name = node["name"] if node is not None else None
            self.events.append(CONFIG_DENIED, name, "denied" if node else "unknown", reason=denied, **ident)
            return Reply.text(403, "forbidden\n")
        if node["answer"] != "install":
            self.events.append(CONFIG_DENIED, node["name"], "denied", reason=node["reason"], **ident)
            return Reply.text(403, f"no config: node is {node['reason']}\n")
        try:
            data = self.layout.config(node["name"]).read_bytes()
        except FileNotFoundError:
            self.events.append(
                CONFIG_FETCH, node["name"], "missing", reason="no config on the boot server", **ident
            )
            return Reply.text(404, "no machine config generated for this node yet\n")
        if req.method == "GET":
            self.events.append(CONFIG_FETCH, node["name"], "ok", bytes=len(data), **ident)
        return Reply(200, data, "application/yaml", {"Cache-Control": "no-store"})

    def asset(self, req: Request) -> Reply:
        path = safe_join(self.assets_dir, req.path.removeprefix("/assets/"))
        if path is None:
            return Reply.text(404, "not found\n")
        if req.method == "GET" and "range" not in req.headers:
            node = self.by_ip.get(req.client_ip)
            self.events.append(
                ASSET_DOWNLOAD, node["name"] if node else None, "served", file=path.name, ip=req.client_ip
            )
        return Reply(file=path, content_type="application/octet-stream")


# --- process management -------------------------------------------------------------------
def _write_state(root: Path, **state: Any) -> None:
    atomic_write(root / STATE, json.dumps(state, sort_keys=True) + "\n", mode=0o600)


def _read_state(root: Path) -> dict[str, Any]:
    try:
        raw = json.loads((root / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _alive(pid: int | None, marker: bytes | None = None) -> bool:
    """``pid`` runs (not a zombie) and, if given, has ``marker`` in its command line."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker is None or marker in cmdline


def _agent_marker(root: Path) -> bytes:
    return str(root).encode()


def _dnsmasq_binary() -> str | None:
    return shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)


def _start_dnsmasq(root: Path, binary: str) -> subprocess.Popen[bytes]:
    conf = root / "run" / "dnsmasq.conf"
    env = {**os.environ, "PROVISIONER_GUARD_PARENT": str(os.getpid())}
    argv = [sys.executable, "-m", "provisioner.netboot.childguard", "--", binary, "--keep-in-foreground"]
    with open(root / "run" / "dnsmasq.stderr", "wb") as err:
        proc = subprocess.Popen(
            [*argv, f"--conf-file={conf}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=die_with_parent,
        )
    try:
        rc = proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        return proc
    text = (root / "run" / "dnsmasq.stderr").read_text(errors="replace").strip()
    raise RuntimeError(f"dnsmasq failed to start (exit {rc}): {text or 'see run/dnsmasq.log'}")


def _stop_proc(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve(root: Path) -> int:
    """The daemon: HTTP (and dnsmasq) until SIGTERM/SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _write_state(root, pid=os.getpid(), state="starting")
    http: HTTPServer | None = None
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        routes = AgentRoutes(root, manifest, EventLog(StateLayout(root).events))
        host, port = manifest["http"]["host"], int(manifest["http"]["port"])
        try:
            http = HTTPServer(host, port, routes)
        except OSError as exc:
            raise RuntimeError(f"HTTP cannot listen on {host}:{port}: {exc.strerror}") from None
        http.start()
        binary = None
        if manifest.get("dhcp"):
            binary = _dnsmasq_binary()
            if binary is None:
                raise RuntimeError("dnsmasq is not installed on the boot server (Debian: dnsmasq-base)")
            absent = [f for f in IPXE_NEEDED if not (IPXE_DIR / f).is_file()]
            if absent:
                raise RuntimeError(f"iPXE binaries missing in {IPXE_DIR}: {', '.join(absent)} (Debian: ipxe)")
            test = subprocess.run(
                [binary, "--test", f"--conf-file={root / 'run' / 'dnsmasq.conf'}"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if test.returncode != 0:
                raise RuntimeError(
                    f"dnsmasq --test rejected the config: {(test.stderr or test.stdout).strip()}"
                )
            dnsmasq = _start_dnsmasq(root, binary)
        address = list(http.address)
        _write_state(
            root,
            pid=os.getpid(),
            state="running",
            http=address,
            dnsmasq_pid=dnsmasq.pid if dnsmasq else None,
            started=time.time(),
        )
        print(f"agent: serving on http://{address[0]}:{address[1]}, dhcp {bool(dnsmasq)}", flush=True)
        last_restart = 0.0
        proxy_log = None
        if dnsmasq is not None:  # proxy answers make no lease: their events come from dnsmasq's log
            proxy_log = ProxyLogFollower(
                root / "run" / "dnsmasq.log",
                routes.events,
                lambda mac: (routes.by_mac.get(normalise_mac(mac)) or {}).get("name"),
            )
        while not stop.wait(1.0):
            if proxy_log is not None:
                try:
                    proxy_log.poll()
                except OSError as exc:  # an unreadable log must not stop the boot service
                    print(f"agent: cannot read dnsmasq's log: {exc}", flush=True)
            if dnsmasq is not None and binary and dnsmasq.poll() is not None:
                if time.monotonic() - last_restart < 5:
                    continue
                print(f"agent: dnsmasq exited with {dnsmasq.returncode}; restarting", flush=True)
                last_restart = time.monotonic()
                try:
                    dnsmasq = _start_dnsmasq(root, binary)
                except RuntimeError as exc:
                    print(f"agent: {exc}", flush=True)
                    continue
                _write_state(root, **{**_read_state(root), "dnsmasq_pid": dnsmasq.pid})
    except Exception as exc:
        print(f"agent: failed: {exc}", flush=True)
        _write_state(root, pid=os.getpid(), state="failed", error=str(exc))
        return 1
    finally:
        _stop_proc(dnsmasq)
        if http is not None:
            http.stop()
    _write_state(root, pid=None, state="stopped", stopped=time.time())
    print("agent: stopped", flush=True)
    return 0


def status(root: Path) -> dict[str, Any]:
    state = _read_state(root)
    running = _alive(state.get("pid"), _agent_marker(root)) and state.get("state") in ("starting", "running")
    events = StateLayout(root).events
    recorded = state.get("state", "never-started")
    if not running and recorded in ("starting", "running"):
        recorded = "dead"  # killed without a chance to record it
    return {
        **state,
        "running": running,
        "state": recorded,
        "events_bytes": events.stat().st_size if events.exists() else 0,
    }


def start(root: Path, timeout: float = 20.0) -> tuple[int, dict[str, Any]]:
    current = status(root)
    if current["running"]:
        return 0, {**current, "note": "already running"}
    log = open(root / LOG, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner.netboot.remote_agent", "--dir", str(root), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the SSH session
            cwd=root,
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _read_state(root)
        if state.get("pid") == proc.pid and state.get("state") in ("running", "failed"):
            break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    result = status(root)
    if result["running"] and result.get("state") == "running":
        return 0, result
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        result["error"] = result.get("error") or f"agent not ready after {timeout:.0f}s"
    if not result.get("error"):
        result["error"] = f"agent exited with {proc.returncode}; see {root / LOG}"
    return 1, result


def stop(root: Path, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    state = _read_state(root)
    pid = state.get("pid")
    marker = _agent_marker(root)
    if not _alive(pid, marker):
        return 0, {"running": False, "state": "stopped", "note": "was not running"}
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, marker):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    dns = state.get("dnsmasq_pid")
    # dnsmasq's guard dies with the agent (its death signal); make sure of it.
    if isinstance(dns, int) and _alive(dns, b"provisioner.netboot.childguard"):
        os.kill(dns, signal.SIGTERM)
    return 0, {"running": False, "state": "stopped", "pid": pid}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="remote_agent", description="provisioner netboot agent (boot server)")
    ap.add_argument("--dir", required=True, type=Path, help="the bundle directory")
    ap.add_argument("action", choices=["start", "stop", "status", "serve", "follow"])
    ap.add_argument("--offset", type=int, default=0, help="follow: byte offset in events.jsonl")
    ap.add_argument("--after", type=int, default=0, help="follow: the last event id already received")
    args = ap.parse_args(argv)
    root = args.dir.resolve()
    os.umask(0o077)
    if args.action == "serve":
        return serve(root)
    if args.action == "follow":
        return follow(root, args.offset, args.after)
    if args.action == "status":
        rc, out = 0, status(root)
    elif args.action == "start":
        rc, out = start(root)
    else:
        rc, out = stop(root)
    print(json.dumps(out, sort_keys=True))
    return rc


if __name__ == "__main__":
    sys.exit(main())
