"""A real etcd (Debian's etcd-server binary) run the way Talos runs it on control planes.

- Bootstrap: one control plane starts a new one-member cluster.
- Join: every other control plane waits until the cluster answers at the control-plane endpoint
  (the VIP), adds itself as a *learner*, starts with ``initial-cluster-state=existing`` and promotes
  itself to a voting member once it has caught up, as Talos does. etcd 3.4 allows one learner at a
  time, so concurrent joiners queue up naturally by retrying "too many learner members".
- Restart: a node whose data directory already holds a member just starts etcd again.

The stand-in talks to etcd over its JSON gRPC gateway (``/v3/cluster/member/...``) with urllib and
uses plain http for client and peer traffic: real Talos uses mutual TLS with the etcd CA; the lab
network is an isolated namespace and the point here is real membership, not etcd's transport.

Standard library only (runs in the initramfs).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .backend import EtcdMember

log = logging.getLogger("standin.etcd")

ETCD_BINARY = "/usr/bin/etcd"
CLIENT_PORT = 2379
PEER_PORT = 2380

# Talos's service states (ServiceList words).
WAITING, PREPARING, RUNNING, FAILED, FINISHED = "Waiting", "Preparing", "Running", "Failed", "Finished"


class EtcdError(Exception):
    """etcd could not be started, joined or asked; the message says which step."""


class EtcdAPIError(EtcdError):
    """etcd answered a gateway request with an error (``message`` holds etcd's text)."""


@dataclass(frozen=True)
class EtcdSettings:
    """Where and how this node's etcd runs."""

    name: str
    address: str
    data_dir: Path
    log_path: Path
    listen_any: bool = False  # VM: 0.0.0.0 so the VIP alias reaches the client port too
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT
    binary: str = ETCD_BINARY
    cluster_token: str = "talos-standin"
    # cluster.etcd.extraArgs (e.g. heartbeat-interval, election-timeout): Talos passes them as flags.
    extra_args: tuple[tuple[str, str], ...] = ()

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"


def api(endpoint: str, path: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """POST to etcd's JSON gateway (``endpoint`` like ``http://10.0.0.5:2379``); raises EtcdAPIError."""
    import urllib.error
    import urllib.request  # lazily: workers and blank nodes never talk to etcd

    req = urllib.request.Request(
        endpoint + path, data=json.dumps(body or {}).encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            doc: dict[str, Any] = json.loads(resp.read() or b"{}")
            return doc
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("message") or exc.reason
        except ValueError:
            detail = exc.reason
        raise EtcdAPIError(str(detail)) from None


def parse_members(doc: dict[str, Any]) -> list[EtcdMember]:
    """Members from a ``member/list`` (or ``member/add``) answer; ids arrive as JSON strings (uint64)."""
    return [
        EtcdMember(
            id=int(m.get("ID", 0)),
            hostname=m.get("name", ""),
            peer_urls=tuple(m.get("peerURLs", ())),
            client_urls=tuple(m.get("clientURLs", ())),
            is_learner=bool(m.get("isLearner", False)),
        )
        for m in doc.get("members", [])
    ]


class Etcd:
    """One node's etcd process and its membership work. Thread-safe; blocking calls (run them off the
    event loop)."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.s = settings
        self.state = WAITING
        self.message = "waiting for bootstrap or for the cluster to join"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.RLock()
        self._cancel = threading.Event()

    # --- state -----------------------------------------------------------------------------------

    def has_data(self) -> bool:
        return (self.s.data_dir / "member").is_dir()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        if not self.running():
            return False
        import urllib.request

        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                self.s.client_url + "/health", timeout=2
            ) as resp:
                return bool(json.loads(resp.read()).get("health") in ("true", True))
        except (OSError, ValueError):
            return False

    def members(self) -> list[EtcdMember]:
        """The cluster's members as this node's etcd sees them."""
        return parse_members(api(self.s.client_url, "/v3/cluster/member/list"))

    # --- process ---------------------------------------------------------------------------------

    def _spawn(self, initial: dict[str, str] | None) -> None:
        s = self.s
        listen_host = "0.0.0.0" if s.listen_any else s.address
        cmd = [
            s.binary,
            "--name",
            s.name,
            "--data-dir",
            str(s.data_dir),
            "--listen-client-urls",
            f"http://{listen_host}:{s.client_port}",
            "--advertise-client-urls",
            s.client_url,
            "--listen-peer-urls",
            f"http://{s.address}:{s.peer_port}",
            "--initial-advertise-peer-urls",
            s.peer_url,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            *(f"--{k}={v}" for k, v in s.extra_args),
        ]
        if initial is not None:
            cmd += [
                "--initial-cluster",
                initial["cluster"],
                "--initial-cluster-state",
                initial["state"],
                "--initial-cluster-token",
                s.cluster_token,
            ]
        s.data_dir.parent.mkdir(parents=True, exist_ok=True)
        s.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(s.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        log.info(
            "talos stand-in: etcd started (pid %d, %s)",
            self._proc.pid,
            initial["state"] if initial else "existing data",
        )

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                self.state, self.message = FAILED, f"etcd exited (see {self.s.log_path})"
                raise EtcdError(self.message)
            if self.healthy():
                self.state, self.message = RUNNING, "etcd is healthy"
                return
            time.sleep(0.2)
        raise EtcdError(f"etcd did not become healthy within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop etcd (reboot, reset) and any join in progress."""
        self._cancel.set()
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
            if self._log is not None:
                self._log.close()
                self._log = None
            self.state, self.message = FINISHED, "stopped"

    # --- the three ways in -----------------------------------------------------------------------

    def restart(self, timeout: float = 120.0) -> None:
        """Start from an existing data directory (a control plane rebooting)."""
        with self._lock:
            self.state, self.message = PREPARING, "starting from existing data"
            self._spawn(None)
        self._wait_healthy(timeout)

    def bootstrap(self, timeout: float = 120.0) -> None:
        """Start a new one-member cluster. The caller checked that this node has no data."""
        self._cancel.set()  # a join loop waiting for the cluster gives way to the bootstrap
        with self._lock:
            if self.running() or self.has_data():
                raise EtcdError("etcd is already running or has data")
            shutil.rmtree(self.s.data_dir, ignore_errors=True)
            self.state, self.message = PREPARING, "bootstrapping a new cluster"
            self._spawn({"cluster": f"{self.s.name}={self.s.peer_url}", "state": "new"})
        self._wait_healthy(timeout)
        log.info("talos stand-in: etcd cluster bootstrapped on %s", self.s.name)

    def join(self, endpoints: list[str], timeout: float = 3600.0, interval: float = 1.0) -> bool:
        """Join the cluster reachable at one of ``endpoints`` (client URLs, e.g. the VIP's).

        Returns False if cancelled (a Bootstrap arrived or the node is going down); raises EtcdError
        when the deadline passes.
        """
        self._cancel.clear()
        deadline = time.monotonic() + timeout
        my_id: int | None = None
        members: list[EtcdMember] = []
        endpoint = endpoints[0]
        while my_id is None:
            if self._cancel.wait(interval):
                return False
            if time.monotonic() > deadline:
                raise EtcdError(f"no etcd cluster answered at {', '.join(endpoints)} within {timeout:.0f}s")
            for ep in endpoints:
                try:
                    my_id, members = self._add_learner(ep)
                    endpoint = ep
                    break
                except (OSError, EtcdAPIError) as exc:
                    self.message = f"waiting for the cluster at {ep}: {exc}"
        with self._lock:
            if self._cancel.is_set():
                return False
            shutil.rmtree(self.s.data_dir, ignore_errors=True)
            self.state, self.message = PREPARING, "joining the cluster as a learner"
            names = []
            for m in members:
                name = self.s.name if m.id == my_id else (m.hostname or f"pending-{m.id:x}")
                names += [f"{name}={u}" for u in m.peer_urls]
            self._spawn({"cluster": ",".join(names), "state": "existing"})
        # A learner refuses linearizable reads (so /health fails) and cluster changes: promotion is
        # asked of the cluster endpoint, and health is checked once this node votes.
        self._promote(my_id, endpoint, deadline, interval)
        self._wait_healthy(max(30.0, deadline - time.monotonic()))
        log.info("talos stand-in: etcd joined the cluster as a voting member (id %x)", my_id)
        return True

    def _add_learner(self, endpoint: str) -> tuple[int, list[EtcdMember]]:
        """``member add --learner`` for this node; if a previous attempt already added our peer URL
        (crash between add and start) reuse that member."""
        try:
            doc = api(endpoint, "/v3/cluster/member/add", {"peerURLs": [self.s.peer_url], "isLearner": True})
        except EtcdAPIError as exc:
            if "already exists" not in str(exc):
                raise
            existing = parse_members(api(endpoint, "/v3/cluster/member/list"))
            mine = next((m for m in existing if self.s.peer_url in m.peer_urls), None)
            if mine is None:
                raise
            return mine.id, existing
        my_id = int(doc["member"]["ID"])
        log.info("talos stand-in: etcd: added as learner %x via %s", my_id, endpoint)
        return my_id, parse_members(doc)

    def _promote(self, my_id: int, endpoint: str, deadline: float, interval: float) -> None:
        """Ask the cluster to promote this learner until it has caught up with the leader."""
        while True:
            if not self.running():
                self.state, self.message = FAILED, f"etcd exited (see {self.s.log_path})"
                raise EtcdError(self.message)
            try:
                api(endpoint, "/v3/cluster/member/promote", {"ID": str(my_id)})
                return
            except EtcdAPIError as exc:
                text = str(exc).strip()
                # promoted by an earlier attempt whose answer was lost; etcd 3.4 says "can only promote a
                # learner member" (but "... member which is in sync with leader" means: not yet)
                if "not a learner" in text or text.endswith("can only promote a learner member"):
                    return
                self.message = f"learner: {exc}"
            except OSError as exc:
                self.message = f"learner: {exc}"
            if time.monotonic() > deadline:
                raise EtcdError(f"promotion to voting member did not succeed: {self.message}")
            if self._cancel.wait(interval):
                return
