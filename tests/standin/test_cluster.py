"""Three stand-in control planes with the real etcd: bootstrap, join, members, kubeconfig, reset."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import pytest
import yaml
from cryptography import x509
from standin_helpers import Machine, Netboot, Secrets, machine_config, run, version, wait_for

from provisioner.talosapi.client import EtcdMember
from provisioner.talosapi.errors import TalosApiError


def _members(m: Machine, secrets: Secrets) -> list[EtcdMember]:
    async def call() -> list[EtcdMember]:
        async with m.mtls(secrets) as c:
            return await c.etcd_member_list()

    return run(call())


def _voting(m: Machine, secrets: Secrets, n: int) -> list[EtcdMember] | None:
    members = _members(m, secrets)
    ok = len(members) == n and not any(x.is_learner for x in members) and all(x.hostname for x in members)
    return members if ok else None


def test_three_control_planes_form_a_real_etcd_cluster(
    netboot: Netboot, secrets: Secrets, prefix: str, machines: Callable[..., Machine]
) -> None:
    endpoint = f"https://{prefix}.100:6443"
    nodes = [machines(f"cp{i}", f"{prefix}.{20 + i}", netboot.cmdline(None)) for i in (1, 2, 3)]
    for m in nodes:
        wait_for(f"{m.hostname} in maintenance", lambda m=m: version(m.maintenance()))

    async def apply_all() -> None:
        async def one(m: Machine) -> None:
            async with m.maintenance() as c:
                await c.apply_configuration(
                    machine_config(secrets, kind="controlplane", hostname=m.hostname, endpoint=endpoint)
                )

        await asyncio.gather(*(one(m) for m in nodes))

    run(apply_all())
    for m in nodes:
        wait_for(f"{m.hostname} configured", lambda m=m: version(m.mtls(secrets)).platform_mode == "metal")
    cp1, cp2, cp3 = nodes

    with pytest.raises(TalosApiError, match=r"FAILED_PRECONDITION|not running"):
        _members(cp1, secrets)

    async def bootstrap(m: Machine) -> None:
        async with m.mtls(secrets) as c:
            await c.bootstrap()

    run(bootstrap(cp1))
    with pytest.raises(TalosApiError, match=r"ALREADY_EXISTS|already"):
        run(bootstrap(cp1))

    members = wait_for("3 voting etcd members", lambda: _voting(cp1, secrets, 3), timeout=60, interval=0.5)
    assert sorted(x.hostname for x in members) == ["cp1", "cp2", "cp3"]
    for x in members:
        host = f"{prefix}.{20 + int(x.hostname[-1])}"
        assert x.peer_urls == (f"http://{host}:2380",)
        assert x.client_urls == (f"http://{host}:2379",)
    # Every member sees the same cluster (real ids from etcd, not made up per node).
    assert {x.id for x in _members(cp3, secrets)} == {x.id for x in members}
    with pytest.raises(TalosApiError, match=r"ALREADY_EXISTS|already"):
        run(bootstrap(cp2))

    async def services(m: Machine) -> dict[str, tuple[str, bool]]:
        async with m.mtls(secrets) as c:
            return {s.id: (s.state, s.healthy) for s in await c.service_list()}

    assert run(services(cp2))["etcd"] == ("Running", True)

    async def kubeconfig(m: Machine) -> bytes:
        async with m.mtls(secrets) as c:
            return await c.kubeconfig()

    doc = yaml.safe_load(run(kubeconfig(cp2)))
    assert doc["clusters"][0]["cluster"]["server"] == endpoint
    crt = x509.load_pem_x509_certificate(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))
    assert secrets.k8s_ca.crt is not None
    crt.verify_directly_issued_by(x509.load_pem_x509_certificate(secrets.k8s_ca.crt))

    async def reset(m: Machine) -> None:
        async with m.mtls(secrets) as c:
            await c.reset(graceful=True, reboot=True)

    run(reset(cp3))
    # The stand-in first leaves etcd, retrying for up to 30 s while etcd calls the cluster
    # unhealthy (members connected for under 5 s), then stops etcd, wipes and reboots: the wait
    # covers that budget and the reboot (30 s alone failed once on a loaded 2-core host).
    v = wait_for("cp3 blank and in maintenance", lambda: version(cp3.maintenance()), timeout=90)
    assert v.platform_mode == "maintenance"
    assert list(cp3.disk("sda").iterdir()) == []
    left = wait_for("cp3 gone from etcd", lambda: _voting(cp1, secrets, 2), timeout=30)
    assert sorted(x.hostname for x in left) == ["cp1", "cp2"]
