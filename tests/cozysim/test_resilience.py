"""Several simulator instances (one leader through the Lease), and convergence through server faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from cozysim_lab import Lab, is_ready, lab_cluster, wait_for

from provisioner.lab.kube.cozysim import kinds


def _lease(lab: Lab) -> dict:
    return lab.get(kinds.LEASE, "cozystack-simulator", "cozy-system") or {}


def _all_ready(lab: Lab, count: int) -> bool:
    hrs = lab.list(kinds.HELMRELEASE)
    return len(hrs) >= count and all(is_ready(h) for h in hrs)


def test_one_leader_at_a_time_and_takeover_when_it_stops(tmp_path) -> None:
    with lab_cluster(delay=0.02) as lab:
        log = open(tmp_path / "standby.log", "wb")  # noqa: SIM115 - closed below
        standby = subprocess.Popen(
            [
                sys.executable, "-m", "provisioner.lab.kube.cozysim",
                "--kubeconfig", str(lab.root / "kubeconfig"), "--identity", "standby", "--delay", "0.02",
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip
        try:
            lab.install_v0({"bundle-name": "distro-hosted"})
            wait_for("distro-hosted installed", lambda: _all_ready(lab, 7), lab)
            holder = _lease(lab)["spec"]["holderIdentity"]
            assert holder, "someone holds the lease"
            first_transitions = int(_lease(lab)["spec"].get("leaseTransitions") or 0)
            if holder == "standby":
                standby.send_signal(signal.SIGTERM)
                assert standby.wait(timeout=30) == 0
            else:
                os.kill(lab.simulator_pid, signal.SIGTERM)
            successor = wait_for(
                "the other instance to take the lease",
                lambda: (h := _lease(lab)["spec"].get("holderIdentity")) and h != holder and h,
                lab,
                30,
            )
            assert int(_lease(lab)["spec"]["leaseTransitions"]) == first_transitions + 1
            lab.merge(kinds.CONFIGMAP, "cozystack", {"data": {"bundle-enable": "velero"}}, "cozy-system")
            wait_for(
                f"the new leader ({successor}) to install velero",
                lambda: is_ready(lab.get(kinds.HELMRELEASE, "velero", "cozy-velero")),
                lab,
            )
        finally:
            if standby.poll() is None:
                standby.send_signal(signal.SIGTERM)
                standby.wait(timeout=30)
            log.close()
        if holder != "standby":
            assert "standby holds the lease" in (tmp_path / "standby.log").read_text()


def _simulator(lab: Lab, identity: str, log_path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                sys.executable, "-m", "provisioner.lab.kube.cozysim",
                "--kubeconfig", str(lab.root / "kubeconfig"), "--identity", identity,
                "--delay", "0.02", "--lease-duration", "3",
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip


def test_a_dead_leader_is_replaced_once_its_lease_expires(tmp_path) -> None:
    with lab_cluster(simulator=False) as lab:
        procs = {name: _simulator(lab, name, tmp_path / f"{name}.log") for name in ("cp1", "cp2")}
        try:
            lab.install_v0({"bundle-name": "distro-hosted"})
            wait_for("distro-hosted installed", lambda: _all_ready(lab, 7), lab)
            holder = _lease(lab)["spec"]["holderIdentity"]
            procs[holder].kill()  # the leader's control plane dies: no release, the lease must expire
            procs[holder].wait(timeout=30)
            other = "cp2" if holder == "cp1" else "cp1"
            wait_for(
                "the survivor to take the expired lease",
                lambda: _lease(lab)["spec"]["holderIdentity"] == other,
                lab,
                30,
            )
            lab.merge(kinds.CONFIGMAP, "cozystack", {"data": {"bundle-enable": "velero"}}, "cozy-system")
            wait_for(
                "the survivor to install velero",
                lambda: is_ready(lab.get(kinds.HELMRELEASE, "velero", "cozy-velero")),
                lab,
            )
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
        assert f"{other} holds the lease" in (tmp_path / f"{other}.log").read_text()


def test_converges_through_api_500s_resets_and_stalled_watches() -> None:
    with lab_cluster(delay=0.02, faults="seed=7,api500=0.05,reset=0.03,stall-watch=0.1") as lab:
        lab.install_v0({"bundle-name": "distro-hosted"})
        wait_for("distro-hosted installed despite the faults", lambda: _all_ready(lab, 7), lab, 90)
        lab.merge(kinds.CONFIGMAP, "cozystack", {"data": {"bundle-enable": "velero"}}, "cozy-system")
        wait_for(
            "a change made after the faults to be handled",
            lambda: is_ready(lab.get(kinds.HELMRELEASE, "velero", "cozy-velero")),
            lab,
            90,
        )


def test_stops_when_its_cluster_is_torn_down(tmp_path) -> None:
    """No server is needed: a simulator whose kubeconfig vanishes stops, reachable server or not."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        "clusters:\n- name: gone\n"
        "  cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}\n"
        "users:\n- name: gone\n  user: {token: unused}\n"
        "contexts:\n- name: gone\n  context: {cluster: gone, user: gone}\n"
    )
    kubeconfig.chmod(0o600)
    log_path = tmp_path / "sim.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner.lab.kube.cozysim", "--kubeconfig", str(kubeconfig)],
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        while "starting as" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, "it keeps retrying while its kubeconfig exists"
        kubeconfig.unlink()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "the cluster was torn down, stopping" in log_path.read_text()
