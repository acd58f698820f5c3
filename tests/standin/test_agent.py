"""The agent as a process: config source boot, maintenance apply -> install -> configured mode, mutual TLS."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from standin_helpers import Machine, Netboot, Secrets, machine_config, run, version, wait_for

from provisioner.talosapi.errors import TalosApiError

UUID = "8f0e1c2a-5b7d-4e3f-9a1b-2c3d4e5f6a7b"


def _configured(m: Machine, secrets: Secrets) -> bool:
    return version(m.mtls(secrets)).platform_mode == "metal"


def test_config_source_with_uuid_is_fetched_installed_and_booted(
    netboot: Netboot, secrets: Secrets, prefix: str, machines: Callable[..., Machine]
) -> None:
    addr = f"{prefix}.11"
    cfg = machine_config(
        secrets, kind="controlplane", hostname="cp-src", endpoint=f"https://{prefix}.100:6443"
    )
    netboot.configs[UUID] = cfg
    m = machines("cp-src", addr, netboot.cmdline("uuid=${uuid}&mac=${mac}"), uuid=UUID.upper())

    v = wait_for("configured mode after the talos.config boot", lambda: version(m.mtls(secrets)), timeout=40)
    assert (v.tag, v.platform_name, v.platform_mode, v.hostname) == (
        "v1.11.6-standin",
        "metal",
        "metal",
        "cp-src",
    )
    fetched = [urlsplit(p) for p in netboot.requests if p.startswith("/config")]
    assert fetched, netboot.requests
    assert parse_qs(fetched[0].query)["uuid"] == [UUID]  # SMBIOS UUID substituted (lowercase, as Talos)
    disk = m.disk("sda")
    assert (disk / "config.yaml").read_bytes() == cfg
    assert (disk / "boot/vmlinuz").read_bytes() == netboot.kernel
    assert (disk / "boot/initramfs.zst").read_bytes() == netboot.initrd
    assert "standin.boot=disk" in (disk / "boot/extlinux.conf").read_text()
    assert list(m.disk("sdb").iterdir()) == []


def test_unknown_uuid_retries_then_falls_back_to_maintenance(
    netboot: Netboot, prefix: str, machines: Callable[..., Machine]
) -> None:
    m = machines(
        "blank",
        f"{prefix}.12",
        netboot.cmdline("uuid="),
        uuid=UUID,
        extra_args=("--fetch-total-timeout", "2.5"),
    )
    # The config URL answers 404 for this UUID: retried, and once the (test-shortened) budget is
    # spent the node waits in maintenance mode instead.
    v = wait_for("maintenance mode after the fetch budget", lambda: version(m.maintenance()))
    assert v.platform_mode == "maintenance"
    fetches = [p for p in netboot.requests if p.startswith("/config")]
    assert len(fetches) >= 2
    assert all(parse_qs(urlsplit(p).query)["uuid"] == [UUID] for p in fetches)  # legacy ?uuid= filled
    assert list(m.disk("sda").iterdir()) == []


def test_maintenance_apply_installs_and_reboots_into_mutual_tls(
    netboot: Netboot, secrets: Secrets, prefix: str, machines: Callable[..., Machine]
) -> None:
    addr = f"{prefix}.13"
    m = machines("cp-m", addr, netboot.cmdline(None))
    v = wait_for("maintenance mode", lambda: version(m.maintenance()))
    assert (v.tag, v.platform_mode) == ("v1.11.6-standin", "maintenance")

    endpoint = f"https://{prefix}.100:6443"
    wrong_disk = machine_config(
        secrets, kind="controlplane", hostname="cp-m", endpoint=endpoint, disk="/dev/nvme9n1"
    )
    with pytest.raises(TalosApiError, match="nvme9n1"):
        run(_apply(m, wrong_disk))
    with pytest.raises(TalosApiError, match="v1alpha1"):
        run(_apply(m, b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n"))
    assert list(m.disk("sda").iterdir()) == []  # refused configs touched nothing

    good = machine_config(secrets, kind="controlplane", hostname="cp-m", endpoint=endpoint)
    result = run(_apply(m, good))
    assert "install" in result.mode_details
    wait_for("configured mode after install", lambda: _configured(m, secrets))
    assert (m.disk("sda") / "config.yaml").read_bytes() == good

    # Mutual TLS: a client certificate from another OS CA is refused; so is no certificate at all.
    stranger = Secrets.new()
    with pytest.raises(TalosApiError):
        version(m.mtls(secrets, client=stranger.client()))
    with pytest.raises(TalosApiError):
        version(m.maintenance())
    # A reader may read but not act.
    reader = secrets.client("os:reader")
    assert version(m.mtls(secrets, client=reader)).hostname == "cp-m"
    with pytest.raises(TalosApiError, match=r"PERMISSION_DENIED|os:admin"):
        run(_bootstrap(m, secrets, reader))

    services = run(_services(m, secrets))
    assert services["apid"] == "Running" and services["trustd"] == "Running"
    assert services["etcd"] in ("Waiting", "Preparing")  # not bootstrapped: nothing pretends to run
    assert "kubelet" not in services
    lines = [line for line in m.console().splitlines() if line.strip()]
    assert lines and all("talos stand-in" in line for line in lines), lines[:5]


async def _apply(m: Machine, data: bytes):  # type: ignore[no-untyped-def]
    async with m.maintenance() as c:
        return await c.apply_configuration(data)


async def _bootstrap(m: Machine, secrets: Secrets, client) -> None:  # type: ignore[no-untyped-def]
    async with m.mtls(secrets, client=client) as c:
        await c.bootstrap()


async def _services(m: Machine, secrets: Secrets) -> dict[str, str]:
    async with m.mtls(secrets) as c:
        return {s.id: s.state for s in await c.service_list()}
