"""Host mode: "an existing cluster" on loopback — a local etcd, the API server stand-in, and the
Cozystack simulator when its module exists.

``up`` starts everything detached (own sessions, pids in ``pids.json``) so tests and hosted bundles
can use it after the command returns; ``down`` stops what ``pids.json`` names (checking each pid is
still ours) and removes the runtime files. The CA and the admin client certificate are generated
once and kept in ``pki/`` (0600). ``running`` is the same thing as a context manager for tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...fsutil import atomic_write
from .faults import parse_faults
from .pki import DEFAULT_DNS, new_ca, serving_cert

log = logging.getLogger("kube-stand-in.host")

ETCD_BINARY = "/usr/bin/etcd"
SIMULATOR_MODULE = "provisioner.lab.kube.cozysim"
ESSENTIAL = ("etcd", "apiserver")  # the simulator may come and go; these two are the cluster
DEFAULT_PORT = 6443
RUNTIME = ("etcd", "pids.json", "kubeconfig", "port", "tokens", "etcd.log", "apiserver.log", "cozysim.log")


class KubeHostError(Exception):
    """The host cluster could not be started or stopped; the message says which part and where."""


@dataclass(frozen=True)
class KubePaths:
    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pids(self) -> Path:
        return self.root / "pids.json"

    @property
    def port_file(self) -> Path:
        return self.root / "port"


@dataclass(frozen=True)
class KubeHost:
    """A running host cluster: where its kubeconfig is and how to reach it."""

    root: Path
    kubeconfig: Path
    server: str
    etcd: str
    pids: dict[str, int]
    simulator: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "etcd": self.etcd,
            "pids": self.pids,
            "simulator": self.simulator,
        }


def free_port(preferred: int = 0) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise KubeHostError("no free port on 127.0.0.1")


def _write_secret(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


def ensure_pki(paths: KubePaths) -> None:
    """CA, serving certificate and admin client certificate, generated once (0600)."""
    from ..standin.kubeconfig import admin_client_cert

    pki = paths.pki
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    if not (pki / "ca.crt").exists() or not (pki / "ca.key").exists():
        crt, key = new_ca("kubernetes-stand-in")
        _write_secret(pki / "ca.key", key)
        _write_secret(pki / "ca.crt", crt)
        for stale in ("server.crt", "server.key", "admin.crt", "admin.key"):
            (pki / stale).unlink(missing_ok=True)
    ca_crt, ca_key = (pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes()
    if not (pki / "server.crt").exists():
        crt, key = serving_cert(ca_crt, ca_key, ["127.0.0.1"], DEFAULT_DNS)
        _write_secret(pki / "server.key", key)
        _write_secret(pki / "server.crt", crt)
    if not (pki / "admin.crt").exists():
        crt, key = admin_client_cert(ca_crt, ca_key)
        _write_secret(pki / "admin.key", key)
        _write_secret(pki / "admin.crt", crt)


def kubeconfig_text(server: str, ca: bytes, crt: bytes, key: bytes, name: str = "stand-in") -> bytes:
    import base64

    def b(x: bytes) -> str:
        return base64.b64encode(x).decode()

    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {name}\n  cluster:\n    server: {server}\n"
        f"    certificate-authority-data: {b(ca)}\n"
        f"users:\n- name: admin@{name}\n  user:\n    client-certificate-data: {b(crt)}\n"
        f"    client-key-data: {b(key)}\n"
        f"contexts:\n- name: admin@{name}\n  context:\n    cluster: {name}\n    namespace: default\n"
        f"    user: admin@{name}\n"
        f"current-context: admin@{name}\n"
    ).encode()


def _alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text(errors="replace") if Path(f"/proc/{pid}/stat").exists() else ""
    return marker in cmdline and ") Z " not in stat


def _spawn(cmd: list[str], log_path: Path, detach: bool) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as logf:
        return subprocess.Popen(
            cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=detach, cwd="/"
        )


def _wait(pred: Any, timeout: float, what: str, procs: list[subprocess.Popen[bytes]], log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise KubeHostError(f"{what}: process exited with code {p.returncode} (see {log_path})")
        if pred():
            return
        time.sleep(0.05)
    raise KubeHostError(f"{what}: not ready within {timeout:.0f}s (see {log_path})")


def _etcd_healthy(url: str) -> bool:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url + "/health", timeout=1) as resp:
            return bool(json.loads(resp.read()).get("health") in ("true", True))
    except (OSError, ValueError):
        return False


def client_ssl(paths: KubePaths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    ctx.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
    return ctx


def _api_ready(server: str, paths: KubePaths) -> bool:
    try:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=client_ssl(paths))
        )
        with opener.open(server + "/version", timeout=1) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def status(root: Path) -> KubeHost | None:
    """The running host cluster at ``root``, or None."""
    paths = KubePaths(root)
    try:
        info = json.loads(paths.pids.read_text())
    except (OSError, ValueError):
        return None
    pids = {k: int(v) for k, v in info.get("pids", {}).items()}
    if not all(name in pids and _alive(pids[name], str(root)) for name in ESSENTIAL):
        return None
    sim = "cozysim" in pids and _alive(pids["cozysim"], str(root))
    return KubeHost(root, paths.kubeconfig, info["server"], info["etcd"], pids, sim)


def up(
    root: Path,
    faults: str | None = None,
    delay: float | None = None,
    simulator: bool = True,
    detach: bool = True,
    kubernetes_version: str = "v1.34.1",
    port: int = DEFAULT_PORT,
    bookmark_interval: float = 5.0,
    token: str | None = None,
) -> KubeHost:
    """Start etcd, the API server stand-in and (if present) the simulator under ``root``."""
    spec = parse_faults(faults)  # a bad spec fails here, before anything starts
    root = root.resolve()
    running = status(root)
    if running is not None:
        return running
    down(root)  # leftovers of a crashed run
    paths = KubePaths(root)
    root.mkdir(parents=True, exist_ok=True)
    ensure_pki(paths)
    procs: list[subprocess.Popen[bytes]] = []
    pids: dict[str, int] = {}
    try:
        client, peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client}"
        etcd_log = root / "etcd.log"
        etcd = _spawn(
            [
                ETCD_BINARY,
                "--name", "kube-stand-in",
                "--data-dir", str(root / "etcd"),
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"kube-stand-in=http://127.0.0.1:{peer}",
                "--auto-compaction-mode", "periodic",
                "--auto-compaction-retention", "5m",
                "--logger", "zap",
            ],
            etcd_log,
            detach,
        )  # fmt: skip
        procs.append(etcd)
        pids["etcd"] = etcd.pid
        _wait(lambda: _etcd_healthy(etcd_url), 30, "etcd", procs, etcd_log)
        token_file = None
        if token:
            token_file = root / "tokens"
            _write_secret(token_file, (token + "\n").encode())
        api_port = free_port(port)
        api_log = root / "apiserver.log"
        paths.port_file.unlink(missing_ok=True)
        pki = paths.pki
        api = _spawn(
            [
                sys.executable, "-m", "provisioner.lab.kube", "serve",
                "--etcd", etcd_url,
                "--cert", str(pki / "server.crt"), "--key", str(pki / "server.key"),
                "--ca", str(pki / "ca.crt"),
                "--host", "127.0.0.1", "--port", str(api_port), "--port-file", str(paths.port_file),
                "--kubernetes-version", kubernetes_version,
                "--faults", spec.to_text(),
                "--bookmark-interval", str(bookmark_interval),
                *(["--token-file", str(token_file)] if token_file else []),
                "--root", str(root),
            ],
            api_log,
            detach,
        )  # fmt: skip
        procs.append(api)
        pids["apiserver"] = api.pid
        server = f"https://127.0.0.1:{api_port}"
        _wait(lambda: _api_ready(server, paths), 30, "API server stand-in", procs, api_log)
        _write_secret(
            paths.kubeconfig,
            kubeconfig_text(
                server,
                (pki / "ca.crt").read_bytes(),
                (pki / "admin.crt").read_bytes(),
                (pki / "admin.key").read_bytes(),
            ),
        )
        with_sim = simulator and _has_module(SIMULATOR_MODULE + ".__main__")
        if with_sim:
            sim_log = root / "cozysim.log"
            sim = _spawn(
                [
                    sys.executable, "-m", SIMULATOR_MODULE,
                    "--kubeconfig", str(paths.kubeconfig),
                    "--delay", str(1.0 if delay is None else delay),
                    "--faults", spec.to_text(),
                ],
                sim_log,
                detach,
            )  # fmt: skip
            procs.append(sim)
            pids["cozysim"] = sim.pid
        atomic_write(
            paths.pids, json.dumps({"pids": pids, "server": server, "etcd": etcd_url}).encode(), mode=0o600
        )
        log.info("kube stand-in: host cluster up at %s (kubeconfig %s)", server, paths.kubeconfig)
        return KubeHost(root, paths.kubeconfig, server, etcd_url, pids, with_sim)
    except BaseException:
        for p in reversed(procs):
            _stop_proc(p.pid, str(root))
        _clean(paths)
        raise


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _stop_proc(pid: int, marker: str, timeout: float = 10.0) -> bool:
    if not _alive(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid, marker):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


def _clean(paths: KubePaths) -> None:
    import shutil

    for name in RUNTIME:
        p = paths.root / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    paths.port_file.with_suffix(".tmp").unlink(missing_ok=True)


def down(root: Path) -> dict[str, Any]:
    """Stop the simulator, the server and etcd (in that order) and remove the runtime files; the PKI
    stays. Safe to call when nothing runs."""
    root = root.resolve()
    paths = KubePaths(root)
    stopped: list[str] = []
    try:
        pids = json.loads(paths.pids.read_text()).get("pids", {})
    except (OSError, ValueError):
        pids = {}
    for name in ("cozysim", "apiserver", "etcd"):
        if name in pids and _stop_proc(int(pids[name]), str(root)):
            stopped.append(name)
    _clean(paths)
    return {"root": str(root), "stopped": stopped}


@contextlib.contextmanager
def running(
    root: Path | None = None,
    *,
    simulator: bool = False,
    faults: str | None = None,
    delay: float | None = None,
    port: int = 0,
    bookmark_interval: float = 5.0,
    token: str | None = None,
) -> Iterator[KubeHost]:
    """A host cluster for the duration of a ``with`` block (in a temporary directory by default);
    yields the KubeHost (``.kubeconfig`` is the path to hand to clients)."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kube-stand-in-")))
        host = up(
            root,
            faults=faults,
            delay=delay,
            simulator=simulator,
            detach=False,
            port=port,
            bookmark_interval=bookmark_interval,
            token=token,
        )
        try:
            yield host
        finally:
            down(root)
