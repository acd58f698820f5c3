"""Kubernetes on the lab's stand-in nodes: the API server on control planes, the VIP election, and a
kubelet stand-in on every node. Runs inside the Talos stand-in agent (stdlib, PyYAML, cryptography).

- **Control planes**, once their etcd is healthy: the API server stand-in as a child process
  (``python3 -m provisioner.lab.kube serve``) on 0.0.0.0:6443 against the cluster's own etcd, its
  serving certificate signed by the cluster's Kubernetes CA from the machine config (SANs: the VIP,
  this node's addresses, 127.0.0.1, ``kubernetes``, ``kubernetes.default.svc`` and the cluster
  domain); clients authenticate with a certificate from that CA (the admin kubeconfig) or with the
  cluster's bootstrap token (the kubelets, as real kubelets bootstrap with it). The Cozystack
  simulator (the in-cluster controllers) runs on the host beside the VMs: ``lab/controllers.py``.
- **VIP election** (as Talos does): every control plane competes for an etcd key bound to a short
  lease; the holder keeps the lease alive and holds the VIP; when it dies the lease expires and
  another control plane takes the key and the VIP (gratuitous ARP). A holder that cannot renew
  drops the VIP, so two nodes never answer for it.
- **Kubelet stand-in** (every node): registers its Node (name, the config's ``machine.nodeLabels``,
  role label, InternalIP, capacity), renews its Lease in ``kube-node-lease``, and keeps the Ready
  condition False (``NetworkPluginNotReady``) until the CNI HelmReleases (``cilium``, ``kubeovn``)
  are Ready, then True (``KubeletReady``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import logging
import os
import platform as pyplatform
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("kube-stand-in.node")

API_PORT = 6443
# Seconds. etcd raises a shorter lease to its floor, 1.5 election timeouts (8 s with the lab's
# 500/5000 ms heartbeat/election on TCG), so 8 is the shortest that means what it says. When the
# holder was also etcd's leader (the first control plane usually is both), the VIP moves after:
# etcd's election (5-10 s), the new leader extending every lease by one election timeout (5 s),
# this TTL, and one election interval: 19-24 s, of issue 10's 30.
VIP_TTL = 8
ELECTION_INTERVAL = 1.0
LEASE_SECONDS = 40
RENEW_INTERVAL = 10.0  # the Lease, as kubelet renews it (a quarter of its 40 s duration)
# Node status is posted when it changes, else every 5 minutes: kubelet's nodeStatusReportFrequency
# since node leases (KEP-589). Posting it every 10 s tripled the writes the slow guests must serve.
STATUS_REPORT_INTERVAL = 300.0
CNI_RELEASES = ("cilium", "kubeovn")
DISKS_ANNOTATION = "lab.provisioner/disks"  # read by the simulator's LinstorSatellite check


def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _pem(doc: dict[str, Any], path: str) -> bytes | None:
    value = _get(doc, path)
    return base64.b64decode(value) if value else None


@dataclass(frozen=True)
class KubeNodeConfig:
    """What the Kubernetes side of a node uses from its machine config."""

    control_plane: bool
    hostname: str
    cluster_name: str
    endpoint: str
    vip: str | None
    bootstrap_token: str = field(repr=False)
    node_labels: dict[str, str]
    kubernetes_version: str
    dns_domain: str
    ca_crt: bytes
    ca_key: bytes | None = field(repr=False)

    @property
    def endpoint_host(self) -> str:
        return urllib.parse.urlsplit(self.endpoint).hostname or ""

    @property
    def endpoint_port(self) -> int:
        return urllib.parse.urlsplit(self.endpoint).port or API_PORT


def parse_kube_config(raw: bytes, hostname: str) -> KubeNodeConfig | None:
    """The Kubernetes settings of a machine config, or None when it has no Kubernetes CA."""
    import yaml

    docs = [d for d in yaml.safe_load_all(raw) if isinstance(d, dict)]
    doc = next((d for d in docs if d.get("version") == "v1alpha1"), None)
    if doc is None:
        return None
    ca_crt = _pem(doc, "cluster.ca.crt")
    if ca_crt is None:
        return None
    vip = None
    for iface in _get(doc, "machine.network.interfaces") or []:
        if isinstance(iface, dict) and _get(iface, "vip.ip"):
            vip = str(_get(iface, "vip.ip"))
    image = str(_get(doc, "machine.kubelet.image") or "")
    version = image.rsplit(":", 1)[1] if ":" in image else "v1.34.1"
    labels = {str(k): str(v) for k, v in (_get(doc, "machine.nodeLabels") or {}).items()}
    for extra in docs:  # Talos 1.12+ may carry labels in separate documents too
        if extra.get("kind") in ("NodeLabelsConfig",) and isinstance(extra.get("labels"), dict):
            labels.update({str(k): str(v) for k, v in extra["labels"].items()})
    return KubeNodeConfig(
        control_plane=str(_get(doc, "machine.type")) in ("controlplane", "init"),
        hostname=str(_get(doc, "machine.network.hostname") or hostname),
        cluster_name=str(_get(doc, "cluster.clusterName") or "talos"),
        endpoint=str(_get(doc, "cluster.controlPlane.endpoint") or ""),
        vip=vip,
        bootstrap_token=str(_get(doc, "cluster.token") or ""),
        node_labels=labels,
        kubernetes_version=version if version.startswith("v") else "v" + version,
        dns_domain=str(_get(doc, "cluster.network.dnsDomain") or "cluster.local"),
        ca_crt=ca_crt,
        ca_key=_pem(doc, "cluster.ca.key"),
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the VIP ---------------------------------------------------------------------------------------


def _etcd(endpoint: str, path: str, body: dict[str, Any], timeout: float = 4.0) -> dict[str, Any]:
    req = urllib.request.Request(
        endpoint + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as resp:
        doc: dict[str, Any] = json.loads(resp.read() or b"{}")
        return doc


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class VipElection:
    """Hold the VIP while this node holds the etcd election key (bound to a ``VIP_TTL`` lease)."""

    def __init__(
        self,
        etcd: str,
        vip: str,
        me: str,
        claim: Callable[[], None],
        release: Callable[[], None],
        ttl: int = VIP_TTL,
        interval: float = ELECTION_INTERVAL,
    ) -> None:
        self.etcd, self.vip, self.me = etcd, vip, me
        self.key = f"/standin/vip/{vip}"
        self._claim, self._release = claim, release
        self.ttl, self.interval = ttl, interval
        self.holding = False
        self._lease: str | None = None
        self._renewed = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._lease is not None:
            with contextlib.suppress(OSError, ValueError):
                _etcd(self.etcd, "/v3/lease/revoke", {"ID": self._lease})
        self._set(False)

    def _set(self, holding: bool) -> None:
        if holding == self.holding:
            return
        try:
            (self._claim if holding else self._release)()
        except Exception as exc:
            log.warning("kube stand-in: VIP %s: %s", self.vip, exc)
            return
        self.holding = holding
        log.info("kube stand-in: VIP %s %s by %s", self.vip, "taken" if holding else "released", self.me)

    def step(self) -> None:
        """One round: renew or get a lease, try to take the key, claim or drop the VIP."""
        if self._lease is not None:
            doc = _etcd(self.etcd, "/v3/lease/keepalive", {"ID": self._lease})
            if int((doc.get("result") or {}).get("TTL") or 0) <= 0:
                self._lease = None
            else:
                self._renewed = time.monotonic()
        if self._lease is None:
            self._lease = str(_etcd(self.etcd, "/v3/lease/grant", {"TTL": str(self.ttl)})["ID"])
            self._renewed = time.monotonic()
        key = _b64(self.key)
        doc = _etcd(
            self.etcd,
            "/v3/kv/txn",
            {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": _b64(self.me), "lease": self._lease}}],
                "failure": [{"request_range": {"key": key}}],
            },
        )
        if doc.get("succeeded"):
            self._set(True)
            return
        kvs = ((doc.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        owner = base64.b64decode(kvs[0].get("value", "")).decode() if kvs else ""
        mine = owner == self.me and kvs and kvs[0].get("lease") == self._lease
        self._set(bool(mine))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except (OSError, ValueError, KeyError) as exc:
                # drop the VIP just before the lease can expire (then another node may take it)
                if self.holding and time.monotonic() - self._renewed > self.ttl * 0.9:
                    log.warning("kube stand-in: cannot renew the VIP lease (%s): dropping the VIP", exc)
                    self._set(False)
                    self._lease = None


# --- the API server on a control plane ----------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class ControlPlaneKube:
    """The API server stand-in process on one control plane, restarted if it dies."""

    def __init__(
        self, kcfg: KubeNodeConfig, root: Path, etcd: str, ips: list[str], port: int = API_PORT
    ) -> None:
        self.kcfg, self.root, self.etcd, self.ips, self.port = kcfg, root, etcd, ips, port
        self.dir = root / "var/kube"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="kube-apiserver", daemon=True)

    def start(self) -> None:
        self._write_pki()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(5)

    def _write_pki(self) -> None:
        from .pki import serving_cert

        k = self.kcfg
        assert k.ca_key is not None
        ips = list(dict.fromkeys([*(self.ips), *([k.vip] if k.vip else []), "127.0.0.1"]))
        if k.endpoint_host and k.endpoint_host[0].isdigit() and k.endpoint_host not in ips:
            ips.append(k.endpoint_host)
        dns = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{k.dns_domain}",
            k.hostname,
        ]
        if k.endpoint_host and not k.endpoint_host[0].isdigit():
            dns.append(k.endpoint_host)
        key = k.ca_key.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY")
        crt, skey = serving_cert(k.ca_crt, key, ips, list(dict.fromkeys(dns)))
        _write_private(self.dir / "server.crt", crt)
        _write_private(self.dir / "server.key", skey)
        _write_private(self.dir / "ca.crt", k.ca_crt)
        _write_private(self.dir / "tokens", (k.bootstrap_token + "\n").encode())

    def _commands(self) -> dict[str, list[str]]:
        d = self.dir
        cmds = {
            "apiserver": [
                sys.executable,
                "-m",
                "provisioner.lab.kube",
                "serve",
                "--etcd",
                self.etcd,
                "--cert",
                str(d / "server.crt"),
                "--key",
                str(d / "server.key"),
                "--ca",
                str(d / "ca.crt"),
                "--token-file",
                str(d / "tokens"),
                "--host",
                "0.0.0.0",
                "--port",
                str(self.port),
                "--kubernetes-version",
                self.kcfg.kubernetes_version,
                # About once a minute, as kube-apiserver's watch cache sends them: every 5 s to each
                # of the controllers' watches kept the slow guests busy.
                "--bookmark-interval",
                "60",
            ]
        }
        return cmds

    def _supervise(self) -> None:
        cmds = self._commands()
        while not self._stop.is_set():
            for name, cmd in cmds.items():
                proc = self._procs.get(name)
                if proc is None or proc.poll() is not None:
                    if proc is not None:
                        log.warning("kube stand-in: %s exited (%s); restarting it", name, proc.returncode)
                    logf = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child's log
                    self._procs[name] = subprocess.Popen(
                        cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL
                    )
                    logf.close()
                    log.info("kube stand-in: %s started (pid %d)", name, self._procs[name].pid)
            self._stop.wait(2.0)


# --- the kubelet stand-in --------------------------------------------------------------------------


def block_devices(sys_block: Path = Path("/sys/block")) -> list[str]:
    """The node's real disks (``/dev/<name>`` for each whole disk in ``/sys/block``, without loop, ram
    and zram devices): the node itself looks, so a disk the inventory names but the VM lacks shows up
    as missing in the simulator's LinstorSatellite status."""
    try:
        names = sorted(p.name for p in sys_block.iterdir())
    except OSError:
        return []
    return [f"/dev/{n}" for n in names if not n.startswith(("loop", "ram", "zram", "sr", "fd"))]


class KubeletStandin:
    """Registers this node's Node object, renews its Lease and reports Ready behind the CNI."""

    def __init__(self, kcfg: KubeNodeConfig, ip: str, api_host: str, api_port: int = API_PORT) -> None:
        self.kcfg, self.ip, self.api_host, self.api_port = kcfg, ip, api_host, api_port
        self.name = kcfg.hostname
        self._ctx = ssl.create_default_context(cadata=kcfg.ca_crt.decode())
        self._ctx.check_hostname = False  # the API is reached by VIP or loopback address; CA still verified
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)
        self.registered = False
        self._cni_ready = False  # once the CNI is installed it stays (kubelet reads it from disk)
        self._reported: tuple[str, float] | None = None  # (Ready status, when) last posted

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def request(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.api_host, self.api_port, context=self._ctx, timeout=10)
        try:
            headers = {
                "Authorization": f"Bearer {self.kcfg.bootstrap_token}",
                "Content-Type": ctype,
                "User-Agent": f"kubelet-stand-in/{self.kcfg.kubernetes_version}",
            }
            conn.request(
                method, path, body=None if body is None else json.dumps(body).encode(), headers=headers
            )
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, (json.loads(data) if data else None)
        finally:
            conn.close()

    def _apply(self, path: str, obj: dict[str, Any]) -> None:
        code, doc = self.request(
            "PATCH", path + "?fieldManager=kubelet-stand-in&force=true", obj, "application/apply-patch+yaml"
        )
        if code == 404:  # the Node is gone (deleted, or a new cluster): register again
            self.registered, self._reported = False, None
        if code not in (200, 201):
            raise OSError(f"{path}: {code} {(doc or {}).get('message', '')}")

    def node_object(self) -> dict[str, Any]:
        k = self.kcfg
        labels = {
            **k.node_labels,
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
        }
        if k.control_plane:
            labels["node-role.kubernetes.io/control-plane"] = ""
        meta = {
            "name": self.name,
            "labels": labels,
            "annotations": {DISKS_ANNOTATION: ",".join(block_devices())},
        }
        return {"apiVersion": "v1", "kind": "Node", "metadata": meta}

    def node_status(self) -> dict[str, Any]:
        mem_kib = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{mem_kib}Ki",
            "pods": "110",
            "ephemeral-storage": "10Gi",
        }
        return {
            "addresses": [
                {"type": "InternalIP", "address": self.ip},
                {"type": "Hostname", "address": self.name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "kubeletVersion": self.kcfg.kubernetes_version,
                "kubeProxyVersion": self.kcfg.kubernetes_version,
                "osImage": "Talos (stand-in)",
                "kernelVersion": pyplatform.release(),
                "containerRuntimeVersion": "containerd://stand-in",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def cni_ready(self) -> bool:
        """True when every CNI HelmRelease that exists is Ready (and at least one exists); asked
        only until it is true, as a node's CNI does not go away."""
        if self._cni_ready:
            return True
        code, doc = self.request("GET", "/apis/helm.toolkit.fluxcd.io/v2/helmreleases")
        if code != 200:
            return False
        cni = [i for i in doc.get("items", []) if i["metadata"]["name"] in CNI_RELEASES]
        self._cni_ready = bool(cni) and all(
            any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (i.get("status") or {}).get("conditions") or []
            )
            for i in cni
        )
        return self._cni_ready

    def ready_condition(self, ready: bool, previous: dict[str, Any] | None) -> dict[str, Any]:
        status = "True" if ready else "False"
        since = previous["lastTransitionTime"] if previous and previous.get("status") == status else _now()
        return {
            "type": "Ready",
            "status": status,
            "reason": "KubeletReady" if ready else "NetworkPluginNotReady",
            "message": "kubelet is posting ready status"
            if ready
            else "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
            "message:Network plugin returns error: cni plugin not initialized",
            "lastHeartbeatTime": _now(),
            "lastTransitionTime": since,
        }

    def sync(self) -> None:
        """Register once (server-side apply), post the node status when Ready changes or every
        STATUS_REPORT_INTERVAL, and renew the Lease: what a kubelet writes, and no more."""
        path = f"/api/v1/nodes/{self.name}"
        if not self.registered:
            self._apply(path, self.node_object())
        ready = self.cni_ready()
        want = "True" if ready else "False"
        now = time.monotonic()
        stale = self._reported is None or now - self._reported[1] >= STATUS_REPORT_INTERVAL
        if stale or self._reported is None or self._reported[0] != want:
            code, node = self.request("GET", path)
            conditions = (node.get("status") or {}).get("conditions") or [] if code == 200 else []
            previous = next((c for c in conditions if c.get("type") == "Ready"), None)
            status = {**self.node_status(), "conditions": [self.ready_condition(ready, previous)]}
            self._apply(
                path + "/status",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name}, "status": status},
            )
            self._reported = (want, now)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _micro_now(),
            },
        }
        self._apply(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}", lease)
        if not self.registered:
            log.info("kube stand-in: kubelet: node %s registered (%s)", self.name, self.ip)
            self.registered = True

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.sync()
                delay = RENEW_INTERVAL
            except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
                if self.registered:
                    log.warning("kube stand-in: kubelet: %s", exc)
                delay = 2.0
            self._stop.wait(delay)
