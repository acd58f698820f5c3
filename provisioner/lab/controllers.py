"""The lab's in-cluster controllers stand-in: the Cozystack simulator, run by the lab daemon.

A real cluster runs Cozystack's installer, Flux and the operators as pods on its nodes. The lab's
nodes are QEMU guests under TCG, where Python runs one to two orders of magnitude slower than on
the host; the simulator there took minutes per HelmRelease and a paas-full install never finished.
So the lab runs the simulator **beside** the VMs, inside the lab's network namespace, as a pod
network would: it reaches the cluster's API server stand-in through the VIP with the admin
kubeconfig, exactly like a controller with a cluster-admin ServiceAccount. The API server, etcd,
the VIP election and the kubelet stand-ins stay inside the VMs.

The daemon does not know the cluster's credentials in advance (``up`` creates them), so it waits
for ``<state_dir>/kubeconfig``, starts the simulator on it, restarts it if it exits, and restarts it
when the file is replaced (a re-formed cluster has a new CA). The simulator itself stops when the
file disappears.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SIMULATOR_MODULE = "provisioner.lab.kube.cozysim"
# Seconds a simulated HelmRelease install takes: short, as every lab run (make up, the e2e tests)
# waits along the bundle's dependency chain (about 15 releases deep for paas-full).
SIMULATOR_DELAY = 0.5
IDENTITY = "lab-controllers"
# The guests' API server answers slowly when TCG starves them, and the lab runs one simulator: so a
# long lease (no rival to hand over to), long watches (fewer restarts to serve) and patient requests.
LAB_OPTIONS = ("--lease-duration", "60", "--watch-idle", "120", "--request-timeout", "60")


class ControllersStandin:
    """Supervises one simulator process for the cluster whose admin kubeconfig is ``kubeconfig``."""

    def __init__(self, kubeconfig: Path, log_path: Path, delay: float = SIMULATOR_DELAY) -> None:
        self.kubeconfig, self.log_path, self.delay = kubeconfig, log_path, delay
        self._proc: subprocess.Popen[bytes] | None = None
        self._seen: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="lab-controllers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._terminate()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.kubeconfig)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            SIMULATOR_MODULE,
            "--kubeconfig",
            str(self.kubeconfig),
            "--delay",
            str(self.delay),
            "--identity",
            IDENTITY,
            *LAB_OPTIONS,
        ]

    def _supervise(self) -> None:
        while not self._stop.is_set():
            current = self._identity()
            if current != self._seen and self._proc is not None:
                log.info("controllers stand-in: %s changed; restarting the simulator", self.kubeconfig)
                self._terminate()
            if current is not None and (self._proc is None or self._proc.poll() is not None):
                if self._proc is not None:
                    log.warning(
                        "controllers stand-in: simulator exited (%s); restarting", self._proc.returncode
                    )
                with open(self.log_path, "ab") as logf:
                    self._proc = subprocess.Popen(
                        self._command(), stdout=logf, stderr=logf, stdin=subprocess.DEVNULL
                    )
                log.info(
                    "controllers stand-in: simulator started (pid %d) on %s", self._proc.pid, self.kubeconfig
                )
            self._seen = current
            self._stop.wait(1.0)
