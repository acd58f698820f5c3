"""The configured node: an installed stand-in running its machine config.

Serves apid with mutual TLS against the config's OS CA (via apid.py), and on control planes trustd
and a real etcd (etcd.py): it waits for Bootstrap or joins the cluster found at the control-plane
endpoint on its own. Implements the Backend apid delegates to. Nothing else runs: ServiceList
reports apid, trustd and etcd only, no pretend kubelet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config as machineconfig
from .backend import (
    AlreadyExists,
    ApplyMode,
    ApplyResult,
    EtcdMember,
    NotReady,
    PreconditionFailed,
    ServiceStatus,
    VersionInfo,
    WipeMode,
)
from .etcd import Etcd, EtcdAPIError, EtcdError, EtcdSettings, api
from .platform import CONFIG_NAME, Platform, write_private

log = logging.getLogger("standin.node")

VERSION_TAG = "v1.11.6-standin"
VIP_MARKER = "var/vip-owner"  # this node held the VIP before a reboot: reclaim it with etcd


@dataclass(frozen=True)
class NodeOptions:
    """Ports and timings (tests shorten the delays and may change the ports)."""

    listen_any: bool = False  # VM: serve on 0.0.0.0 so the VIP alias reaches apid/trustd/etcd
    apid_port: int = 50000
    trustd_port: int = 50001
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    action_delay: float = 1.0  # reboot/reset start this long after the answer went out
    join_timeout: float = 3600.0
    kube: bool = False  # run Kubernetes (API server stand-in, VIP election, kubelet): provisioner/lab/kube


def version_info(mode: str) -> VersionInfo:
    """What Version answers: a Talos-like tag that says stand-in."""
    return VersionInfo(
        tag=VERSION_TAG, sha="standin", os="Talos (stand-in)", platform_name="metal", platform_mode=mode
    )


class ConfiguredNode:
    """Backend of a configured node. ``reboot`` stops the machine (VM) or restarts the agent loop (tests)."""

    def __init__(
        self,
        platform: Platform,
        root: Path,
        cfg: machineconfig.MachineConfig,
        opts: NodeOptions,
        reboot: Callable[[], None],
        halt: Callable[[], None],
    ) -> None:
        self.platform = platform
        self.root = root
        self.cfg = cfg
        self.opts = opts
        self._reboot = reboot
        self._halt = halt
        self._servers: list[Any] = []
        self._trustd_ok = False
        self._apid_ok = False
        self._etcd_lock = threading.Lock()
        self._etcd: Etcd | None = None
        self._host = cfg.hostname or platform.hostname()
        self._ips = platform.addresses()
        self._kube: list[Any] = []  # nodeagent services, stopped in reverse order
        self._kube_started = False
        if cfg.control_plane:
            self._etcd = Etcd(
                EtcdSettings(
                    name=self._host,
                    address=self._ips[0],
                    data_dir=root / "var/etcd",
                    log_path=root / "var/etcd.log",
                    listen_any=opts.listen_any,
                    client_port=opts.etcd_client_port,
                    peer_port=opts.etcd_peer_port,
                    extra_args=cfg.etcd_extra_args,
                )
            )

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring up trustd, apid and etcd (control planes) or fetch a cert from trustd and serve (workers)."""
        from . import apid

        listen = "0.0.0.0" if self.opts.listen_any else self._ips[0]
        cfg = self.cfg
        log.info("talos stand-in: configured mode as %s %s on %s", cfg.machine_type, self._host, self._ips)
        if cfg.control_plane:
            assert cfg.os_ca_key is not None
            self._servers.append(
                await apid.serve_trustd(
                    listen, self.opts.trustd_port, cfg.os_ca_crt, cfg.os_ca_key, cfg.token, self._sans()
                )
            )
            self._trustd_ok = True
            self._servers.append(
                await apid.serve_configured(
                    listen, self.opts.apid_port, self, cfg.os_ca_crt, cfg.os_ca_key, self._sans()
                )
            )
            threading.Thread(target=self._etcd_service, name="etcd", daemon=True).start()
        else:
            cert = await apid.fetch_server_cert(
                [cfg.endpoint_host],
                cfg.os_ca_crt,
                cfg.token,
                self._host,
                self._sans(),
                port=self.opts.trustd_port,
            )
            self._servers.append(
                await apid.serve_configured(
                    listen, self.opts.apid_port, self, cfg.os_ca_crt, None, self._sans(), server_cert=cert
                )
            )
            self._start_kube()
        self._apid_ok = True

    async def stop(self) -> None:
        for part in reversed(self._kube):
            await asyncio.to_thread(part.stop)
        self._kube.clear()
        for server in self._servers:
            await server.stop()
        self._servers.clear()
        self._apid_ok = self._trustd_ok = False
        if self._etcd is not None:
            await asyncio.to_thread(self._etcd.stop)
        if self.cfg.vip:
            self.platform.release_vip(self.cfg.vip)

    def _sans(self) -> list[str]:
        """Node addresses and hostname; control planes add the VIP/endpoint host (trustd is reached there)."""
        extra = [v for v in (self._vip(), self.cfg.endpoint_host) if v] if self.cfg.control_plane else []
        return list(dict.fromkeys([*self._ips, self._host, *extra]))

    def _vip(self) -> str | None:
        """The address to claim: the config's VIP, else the endpoint host when it is an IP literal."""
        if self.cfg.vip:
            return self.cfg.vip
        try:
            return str(ipaddress.ip_address(self.cfg.endpoint_host))
        except ValueError:
            return None

    def _claim_vip(self) -> None:
        vip = self._vip()
        if vip is None or vip in self._ips:
            return
        self.platform.claim_vip(vip, [self.opts.etcd_client_port, self.opts.trustd_port])
        (self.root / VIP_MARKER).parent.mkdir(parents=True, exist_ok=True)
        (self.root / VIP_MARKER).write_text(vip + "\n")

    def _etcd_service(self) -> None:
        """etcd's service runner: restart from data, or join the cluster at the endpoint (until Bootstrap)."""
        etcd = self._etcd
        assert etcd is not None
        try:
            with self._etcd_lock:
                existing = etcd.has_data()
                if existing:
                    etcd.restart()
                    if (self.root / VIP_MARKER).exists() and not self.opts.kube:  # else: the election
                        self._claim_vip()
            if not existing:
                ep = f"http://{self.cfg.endpoint_host}:{self.opts.etcd_client_port}"
                if not etcd.join([ep], timeout=self.opts.join_timeout):
                    return  # a Bootstrap took over: it starts Kubernetes
            self._start_kube()
        except (EtcdError, OSError) as exc:
            log.error("talos stand-in: etcd service failed: %s", exc)
            etcd.state, etcd.message = "Failed", str(exc)

    def _start_kube(self) -> None:
        """Kubernetes on this node (provisioner/lab/kube/nodeagent.py), once: on control planes, with
        etcd healthy, the API server stand-in and the VIP election; on every node, the kubelet."""
        if not self.opts.kube or self._kube_started:
            return
        self._kube_started = True
        # in a thread: imports and key generation are slow under TCG, and Bootstrap must answer now
        threading.Thread(target=self._kube_worker, name="kube-start", daemon=True).start()

    def _kube_worker(self) -> None:
        try:
            from ..kube import nodeagent

            kcfg = nodeagent.parse_kube_config(self.cfg.raw, self._host)
            if kcfg is None:
                log.warning("talos stand-in: no cluster.ca.crt in the config: Kubernetes stays off")
                return
            api_host = kcfg.endpoint_host
            if self._etcd is not None and kcfg.ca_key is not None:
                etcd_url = self._etcd.s.client_url
                self._kube.append(nodeagent.ControlPlaneKube(kcfg, self.root, etcd_url, self._ips))
                vip = self._vip()
                if vip and vip not in self._ips:
                    self._kube.append(
                        nodeagent.VipElection(
                            etcd_url, vip, self._host, self._claim_vip, lambda: self.platform.release_vip(vip)
                        )
                    )
                api_host = "127.0.0.1"
            self._kube.append(nodeagent.KubeletStandin(kcfg, self._ips[0], api_host, kcfg.endpoint_port))
            for part in self._kube:
                part.start()
        except Exception:
            log.exception("talos stand-in: Kubernetes services failed to start")

    # --- Backend ---------------------------------------------------------------------------------

    def hostname(self) -> str:
        return self._host

    def disks(self) -> list[str]:
        return self.platform.disks()

    def apply_config(self, data: bytes, mode: ApplyMode, dry_run: bool) -> ApplyResult:
        new = machineconfig.parse(data)
        if new.machine_type != self.cfg.machine_type and not (new.control_plane and self.cfg.control_plane):
            raise PreconditionFailed(
                f"machine type cannot change from {self.cfg.machine_type} to {new.machine_type}"
            )
        if mode == ApplyMode.TRY:
            raise PreconditionFailed("TRY mode is not supported by the talos stand-in")
        reboot = mode == ApplyMode.REBOOT
        used = (
            ApplyMode.REBOOT
            if reboot
            else (ApplyMode.STAGED if mode == ApplyMode.STAGED else ApplyMode.NO_REBOOT)
        )
        details = (
            "config stored; rebooting to apply it"
            if reboot
            else "config stored; the stand-in applies it at the next boot"
        )
        if dry_run:
            return ApplyResult(used, "dry run: " + details)
        write_private(self.root / CONFIG_NAME, data)
        log.info("talos stand-in: new machine config stored (%s)", used.name)
        if reboot:
            self._later(self._reboot)
        return ApplyResult(used, details)

    def bootstrap(self, recover_etcd: bool) -> None:
        etcd = self._etcd
        if etcd is None:
            raise PreconditionFailed("bootstrap is only possible on a control plane")
        if recover_etcd:
            raise PreconditionFailed("etcd recovery is not supported by the talos stand-in")
        with self._etcd_lock:
            if etcd.running() or etcd.has_data():
                raise AlreadyExists("etcd data directory is not empty: the cluster is already bootstrapped")
            try:
                etcd.bootstrap()
            except EtcdError as exc:
                raise PreconditionFailed(f"etcd bootstrap failed: {exc}") from None
            self._claim_vip()
        self._start_kube()

    def etcd_members(self) -> list[EtcdMember]:
        etcd = self._etcd
        if etcd is None:
            raise PreconditionFailed("etcd does not run on workers")
        if not etcd.running():
            raise PreconditionFailed(f"etcd is not running ({etcd.message})")
        try:
            return etcd.members()
        except (OSError, EtcdAPIError) as exc:
            raise NotReady(f"etcd is not answering yet: {exc}") from None

    def services(self) -> list[ServiceStatus]:
        out = [
            ServiceStatus(
                "apid", "Running" if self._apid_ok else "Waiting", healthy=self._apid_ok, health_unknown=False
            )
        ]
        if self.cfg.control_plane:
            out.append(
                ServiceStatus(
                    "trustd",
                    "Running" if self._trustd_ok else "Waiting",
                    healthy=self._trustd_ok,
                    health_unknown=False,
                )
            )
        if self._etcd is not None:
            healthy = self._etcd.healthy()
            out.append(
                ServiceStatus(
                    "etcd",
                    self._etcd.state,
                    healthy=healthy,
                    health_unknown=not self._etcd.running(),
                    last_message=self._etcd.message,
                )
            )
        return out

    def kubeconfig(self) -> bytes:
        from .kubeconfig import admin_kubeconfig

        cfg = self.cfg
        if not cfg.control_plane or cfg.k8s_ca_crt is None or cfg.k8s_ca_key is None:
            raise PreconditionFailed("kubeconfig is only available on a control plane (needs cluster.ca.key)")
        if self._etcd is None or not self._etcd.healthy():
            raise NotReady("the cluster is not bootstrapped yet (etcd is not running on this node)")
        return admin_kubeconfig(cfg.cluster_name, cfg.endpoint, cfg.k8s_ca_crt, cfg.k8s_ca_key)

    def reset(self, graceful: bool, reboot: bool, mode: WipeMode) -> None:
        disk = self.cfg.install_disk
        if disk is None or disk not in self.platform.disks():
            raise PreconditionFailed("the install disk of this node's config is not present")

        def work() -> None:
            if graceful:
                self._leave_etcd()
            if self._etcd is not None:
                self._etcd.stop()
            if mode in (WipeMode.ALL, WipeMode.SYSTEM_DISK):
                self.platform.wipe(disk)
            (self._reboot if reboot else self._halt)()

        log.info("talos stand-in: reset requested (graceful %s, reboot %s, %s)", graceful, reboot, mode.name)
        self._later(work)

    def version(self) -> VersionInfo:
        return version_info("metal")

    # --- helpers ---------------------------------------------------------------------------------

    def _leave_etcd(self, timeout: float = 30.0) -> None:
        """Graceful reset of a control plane: remove this member from the cluster first, as Talos does.

        etcd refuses the removal ("unhealthy cluster") while the remaining members have not been
        connected for a few seconds (e.g. right after a join): retried until ``timeout``.
        """
        etcd = self._etcd
        if etcd is None or not etcd.running():
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                members = etcd.members()
                me = next((m for m in members if m.hostname == self._host), None)
                if me is not None and len(members) > 1:
                    api(etcd.s.client_url, "/v3/cluster/member/remove", {"ID": str(me.id)})
                    log.info("talos stand-in: left the etcd cluster (member %x)", me.id)
                return
            except (OSError, EtcdAPIError) as exc:
                if time.monotonic() > deadline:
                    log.warning("talos stand-in: could not leave etcd gracefully: %s", exc)
                    return
                time.sleep(1.0)

    def _later(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after the RPC answer has gone out (the client is waiting for it)."""

        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("talos stand-in: scheduled action failed")

        timer = threading.Timer(self.opts.action_delay, run)
        timer.daemon = True
        timer.start()
