"""The few Talos machine-API conversations `up` has with a node.

Readiness probes use one short attempt each (the caller polls); actions use the client's
own bounded retries. Everything else about the protocol lives in ``provisioner.talosapi``.
"""

from __future__ import annotations

from pathlib import Path

from ..talosapi.client import EtcdMember, RetryPolicy, TalosClient
from ..talosapi.errors import TalosApiError, TalosRefused, TalosUnavailable
from ..talosapi.modes import ApplyMode

__all__ = [
    "EtcdMember",
    "TalosUnavailable",
    "apply_config",
    "bootstrap",
    "etcd_members",
    "kubeconfig",
    "maintenance_ready",
    "reset",
    "secure_version",
]

_PROBE = RetryPolicy(attempts=1)


async def maintenance_ready(ip: str, timeout: float = 5.0) -> bool:
    """True once the node's maintenance API answers (it booted without a config)."""
    async with TalosClient.maintenance(ip, timeout=timeout, retry=_PROBE) as client:
        try:
            await client.version()
        except TalosApiError:
            return False
    return True


async def apply_config(ip: str, data: bytes) -> None:
    """Send the machine config to a node in maintenance mode; it installs and reboots."""
    async with TalosClient.maintenance(ip, timeout=60.0) as client:
        await client.apply_configuration(data, mode=ApplyMode.REBOOT)


async def secure_version(ip: str, talosconfig: Path, timeout: float = 5.0) -> str | None:
    """The node's version tag when its installed OS answers over mutual TLS, else None."""
    async with TalosClient.from_talosconfig(talosconfig, ip, timeout=timeout, retry=_PROBE) as client:
        try:
            version = await client.version()
        except TalosApiError:
            return None
    return version.tag


async def etcd_members(ip: str, talosconfig: Path) -> list[EtcdMember]:
    """etcd's members as this control plane sees them; [] when etcd is not running yet."""
    async with TalosClient.from_talosconfig(talosconfig, ip, timeout=10.0, retry=_PROBE) as client:
        try:
            return await client.etcd_member_list()
        except TalosRefused:
            return []  # the node answers but etcd is not up: no members yet
        except TalosApiError as exc:
            raise TalosUnavailable(exc.endpoint, exc.rpc, exc.detail, exc.grpc_status) from None


async def bootstrap(ip: str, talosconfig: Path) -> None:
    async with TalosClient.from_talosconfig(talosconfig, ip, timeout=60.0) as client:
        try:
            await client.bootstrap()
        except TalosRefused as exc:
            if exc.grpc_status != "ALREADY_EXISTS":
                raise


async def kubeconfig(ip: str, talosconfig: Path) -> bytes:
    async with TalosClient.from_talosconfig(talosconfig, ip, timeout=60.0) as client:
        try:
            return await client.kubeconfig()
        except TalosApiError as exc:
            raise TalosUnavailable(exc.endpoint, exc.rpc, exc.detail, exc.grpc_status) from None


async def reset(ip: str, talosconfig: Path) -> None:
    async with TalosClient.from_talosconfig(talosconfig, ip, timeout=60.0) as client:
        try:
            await client.reset(graceful=False, reboot=True)
        except TalosApiError as exc:
            raise TalosUnavailable(exc.endpoint, exc.rpc, exc.detail, exc.grpc_status) from None
