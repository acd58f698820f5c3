"""The contract between the stand-in's gRPC servers (apid.py) and the stand-in OS logic (agent.py).

apid.py speaks the Talos machine API (TLS, roles, protobuf, validation of applied configs); everything a
real Talos node would *do* (install to disk, run etcd, hand out a kubeconfig, wipe itself) is the
backend's job. The agent implements :class:`Backend`; tests implement a recording double of it.

Methods may be plain functions (apid runs them in a worker thread, so blocking work such as starting
etcd is fine) or ``async def`` coroutine functions (awaited on the server's event loop). Raise one of
the :class:`BackendError` subclasses to answer with a specific gRPC status; their message goes to the
client verbatim, so it must never hold secret material.

This module is imported inside the stand-in initramfs: standard library (+ the talosapi enums) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from provisioner.talosapi.modes import ApplyMode, WipeMode

__all__ = [
    "AlreadyExists",
    "ApplyMode",
    "ApplyResult",
    "Backend",
    "BackendError",
    "EtcdMember",
    "InvalidConfig",
    "NotReady",
    "PreconditionFailed",
    "ServiceStatus",
    "VersionInfo",
    "WipeMode",
]


class BackendError(Exception):
    """A failure the client should see with a specific gRPC status (name of a ``grpclib.Status``)."""

    grpc_status = "INTERNAL"


class InvalidConfig(BackendError):
    """The machine config was refused (not v1alpha1, unknown install disk, ...): INVALID_ARGUMENT."""

    grpc_status = "INVALID_ARGUMENT"


class PreconditionFailed(BackendError):
    """The node is not in a state where the call makes sense (e.g. no etcd yet): FAILED_PRECONDITION."""

    grpc_status = "FAILED_PRECONDITION"


class AlreadyExists(BackendError):
    """The requested state already holds (e.g. etcd already bootstrapped): ALREADY_EXISTS, as Talos does."""

    grpc_status = "ALREADY_EXISTS"


class NotReady(BackendError):
    """Not available *yet* (kubeconfig before bootstrap, etcd starting): UNAVAILABLE, so clients retry."""

    grpc_status = "UNAVAILABLE"


@dataclass(frozen=True)
class ApplyResult:
    """What ApplyConfiguration answers: the mode actually used and a human-readable explanation."""

    mode: ApplyMode
    mode_details: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member as EtcdMemberList reports it (``id`` is etcd's uint64 member id)."""

    id: int
    hostname: str
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False


@dataclass(frozen=True)
class ServiceStatus:
    """One service as ServiceList reports it; ``state`` uses Talos's words (Running, Finished, Waiting...)."""

    id: str
    state: str
    healthy: bool = False
    health_unknown: bool = True
    last_message: str = ""


@dataclass(frozen=True)
class VersionInfo:
    """Version answer. ``tag`` must end in "-standin"; ``platform_mode`` is e.g. "metal" or "maintenance"."""

    tag: str
    sha: str = ""
    built: str = ""
    go_version: str = ""
    os: str = "Talos"
    arch: str = "amd64"
    platform_name: str = "metal"
    platform_mode: str = "metal"
    rbac: bool = True


@runtime_checkable
class Backend(Protocol):
    """What a stand-in node does when the machine API asks. See the module docstring for sync/async."""

    def hostname(self) -> str:
        """Hostname reported in the metadata of every response."""
        ...

    def disks(self) -> list[str]:
        """Block devices this machine has (e.g. ``["/dev/sda", "/dev/vda"]``): ApplyConfiguration refuses
        a config whose ``machine.install.disk`` is not one of them."""
        ...

    def apply_config(self, data: bytes, mode: ApplyMode, dry_run: bool) -> ApplyResult:
        """Take a machine config already checked by apid (v1alpha1, known install disk). With ``dry_run``
        change nothing and only say what would happen. Install/reboot work must be scheduled to happen
        *after* the answer is sent (the client is waiting for it). Raise InvalidConfig to refuse."""
        ...

    def bootstrap(self, recover_etcd: bool) -> None:
        """Start a one-member etcd cluster on this control plane. AlreadyExists if etcd has data;
        PreconditionFailed on a worker or in maintenance."""
        ...

    def etcd_members(self) -> list[EtcdMember]:
        """Current etcd members as seen by this node's etcd. PreconditionFailed if etcd is not running."""
        ...

    def services(self) -> list[ServiceStatus]:
        """Services and their states (at least apid, etcd on control planes, kubelet stand-ins)."""
        ...

    def kubeconfig(self) -> bytes:
        """An admin kubeconfig (YAML bytes); apid wraps it in the tar.gz stream. NotReady before bootstrap."""
        ...

    def reset(self, graceful: bool, reboot: bool, mode: WipeMode) -> None:
        """Wipe the install disk (the node must network-boot again afterwards) and reboot or halt.
        Schedule the work to start after the answer has been sent."""
        ...

    def version(self) -> VersionInfo:
        """Version info; ``tag`` ends in "-standin"."""
        ...
