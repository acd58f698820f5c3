"""Fixtures for the Talos API tests: real stand-in servers on 127.0.0.1 driven by a recording Backend.

The Backend here is a test double of the *node's behaviour* (what agent.py does on a VM); the gRPC
servers, TLS and the client under test are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.lab.standin import apid
from provisioner.lab.standin.backend import (
    AlreadyExists,
    ApplyMode,
    ApplyResult,
    EtcdMember,
    NotReady,
    ServiceStatus,
    VersionInfo,
    WipeMode,
)
from provisioner.talos import pki
from provisioner.talos.talosconfig import render_talosconfig
from provisioner.talosapi.client import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, jitter=0.01)

CONFIG_OK = b"""version: v1alpha1
debug: false
persist: true
machine:
    type: controlplane
    token: abcdef.0123456789abcdef
    install:
        disk: /dev/sda
        image: ghcr.io/cozystack/cozystack/talos:v1.11.6
        wipe: false
cluster:
    clusterName: lab
    controlPlane:
        endpoint: https://192.0.2.10:6443
"""


class RecordingBackend:
    """Records every call; ``fail[name]`` is a queue of exceptions raised by the next calls to ``name``."""

    def __init__(self, disks: tuple[str, ...] = ("/dev/sda", "/dev/vda"), kubeconfig: bytes = b"") -> None:
        self._disks = list(disks)
        self._kubeconfig = kubeconfig or b"apiVersion: v1\nkind: Config\nclusters: []\n"
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, list[BaseException]] = {}
        self.delay: dict[str, float] = {}
        self.bootstrapped = False

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        queue = self.fail.get(name)
        if queue:
            raise queue.pop(0)

    def calls_to(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]

    def hostname(self) -> str:
        return "cp1"

    def disks(self) -> list[str]:
        return list(self._disks)

    def apply_config(self, data: bytes, mode: ApplyMode, dry_run: bool) -> ApplyResult:
        self._record("apply_config", data, mode, dry_run)
        details = "Dry run: the config would be applied" if dry_run else "Applied: installing, then reboot"
        return ApplyResult(mode=mode, mode_details=details, warnings=("stand-in warning",))

    def bootstrap(self, recover_etcd: bool) -> None:
        self._record("bootstrap", recover_etcd)
        if self.bootstrapped:
            raise AlreadyExists("etcd data directory is not empty")
        self.bootstrapped = True

    def etcd_members(self) -> list[EtcdMember]:
        self._record("etcd_members")
        return [
            EtcdMember(
                id=0xFFFF_FFFF_FFFF_FF01,
                hostname="cp1",
                peer_urls=("https://10.0.0.11:2380",),
                client_urls=("https://10.0.0.11:2379",),
            ),
            EtcdMember(id=7, hostname="cp2", peer_urls=("https://10.0.0.12:2380",), is_learner=True),
        ]

    async def services(self) -> list[ServiceStatus]:  # a coroutine: exercises apid's async path
        self._record("services")
        await asyncio.sleep(self.delay.get("services", 0))
        return [
            ServiceStatus("apid", "Running", healthy=True, health_unknown=False),
            ServiceStatus("etcd", "Preparing", last_message="waiting for bootstrap"),
        ]

    def kubeconfig(self) -> bytes:
        self._record("kubeconfig")
        if not self.bootstrapped:
            raise NotReady("kubeconfig is not available before bootstrap")
        return self._kubeconfig

    def reset(self, graceful: bool, reboot: bool, mode: WipeMode) -> None:
        self._record("reset", graceful, reboot, mode)

    def version(self) -> VersionInfo:
        self._record("version")
        return VersionInfo(tag="v1.11.6-standin", sha="abc123", platform_mode="metal")


@pytest.fixture(scope="session")
def os_ca() -> pki.KeyPair:
    return pki.new_ca("talos", "ed25519")


@pytest.fixture(scope="session")
def other_ca() -> pki.KeyPair:
    return pki.new_ca("talos", "ed25519")


def write_talosconfig(path: Path, ca: pki.KeyPair, client: pki.KeyPair, endpoints: list[str]) -> Path:
    assert ca.crt is not None
    path.write_bytes(render_talosconfig("lab", endpoints, ca.crt, client))
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


@contextlib.asynccontextmanager
async def maintenance_server(backend: RecordingBackend) -> AsyncIterator[apid.RunningServer]:
    running = await apid.serve_maintenance("127.0.0.1", 0, backend)
    try:
        yield running
    finally:
        await running.stop()


@contextlib.asynccontextmanager
async def configured_server(backend: RecordingBackend, ca: pki.KeyPair) -> AsyncIterator[apid.RunningServer]:
    assert ca.crt is not None
    running = await apid.serve_configured("127.0.0.1", 0, backend, ca.crt, ca.key, ["127.0.0.1"])
    try:
        yield running
    finally:
        await running.stop()
