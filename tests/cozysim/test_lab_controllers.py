"""The lab daemon's controllers stand-in (provisioner/lab/controllers.py): it waits for the cluster's
admin kubeconfig, then runs the simulator against it, and starts over on a replaced kubeconfig."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lightkube import ApiError, Client, KubeConfig
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Namespace

from provisioner.lab.controllers import IDENTITY, ControllersStandin
from provisioner.lab.kube import host


def _until(pred: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _holder(client: Client) -> str | None:
    try:
        lease = client.get(Lease, "cozystack-simulator", namespace="cozy-system")
    except ApiError:
        return None
    return lease.spec.holderIdentity if lease.spec else None


def test_controllers_wait_for_the_kubeconfig_then_run_the_simulator(tmp_path: Path) -> None:
    target = tmp_path / "state" / "kubeconfig"
    target.parent.mkdir()
    with host.running(simulator=False) as cluster:
        client = Client(config=KubeConfig.from_file(str(cluster.kubeconfig)), field_manager="test")
        client.create(Namespace(metadata={"name": "cozy-system"}))
        standin = ControllersStandin(target, tmp_path / "controllers.log")
        standin.start()
        try:
            time.sleep(2.5)
            assert standin._proc is None, "started before the cluster's kubeconfig existed"
            assert _holder(client) is None

            shutil.copy(cluster.kubeconfig, target)
            assert _until(lambda: _holder(client) == IDENTITY, 60, "the simulator's lease")
            first = standin._proc
            assert first is not None and first.poll() is None

            # A re-formed cluster writes a new kubeconfig: the simulator is started again on it.
            replaced = target.with_suffix(".new")
            shutil.copy(cluster.kubeconfig, replaced)
            replaced.replace(target)
            _until(lambda: standin._proc is not None and standin._proc is not first, 30, "a restart")
            assert first.poll() is not None
            second = standin._proc
        finally:
            standin.stop()
        assert standin._proc is None
        assert second is not None and second.poll() is not None, "the simulator outlived the lab daemon"
