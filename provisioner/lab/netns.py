"""The lab's private network: one namespace, one bridge, one tap per VM.

Every lab address (the management subnet, the BMC endpoints, the netboot server)
exists only inside this namespace, so a lab can never answer DHCP on, or route
into, the host's real networks. Every name carries the ``pvlab-`` prefix, which is
what lets teardown find and remove everything the lab ever created, even after a
crash lost the state files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from ..errors import OperationError

PREFIX = "pvlab-"
IFNAMSIZ = 15  # Linux interface names are at most 15 bytes


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise OperationError(f"lab network: ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def namespace_name(cluster: str) -> str:
    """The namespace of a lab: one per inventory cluster name, so two labs never share one."""
    return PREFIX + cluster


def ifname(kind: str, name: str) -> str:
    """A ``pvlab-`` interface name for ``name`` that fits IFNAMSIZ (hashed when too long)."""
    full = f"{PREFIX}{kind}{name}"
    if len(full) <= IFNAMSIZ:
        return full
    return f"{PREFIX}{kind}{hashlib.sha1(name.encode()).hexdigest()[: IFNAMSIZ - len(PREFIX) - len(kind)]}"


def namespaces() -> list[str]:
    """Every lab namespace that exists now (ours or a crashed run's)."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def exists(ns: str) -> bool:
    return ns in namespaces()


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` inside the lab namespace."""
    return ["ip", "netns", "exec", ns, *argv]


@dataclass(frozen=True)
class LabNetwork:
    """The namespace, its bridge and the address the bridge holds (gateway, netboot, BMCs)."""

    namespace: str
    bridge: str
    address: str  # CIDR, e.g. 192.168.77.1/24
    mtu: int = 1500

    def create(self) -> None:
        """Create namespace and bridge; idempotent so a half-finished ``up`` can be rerun."""
        if not exists(self.namespace):
            _ip("netns", "add", self.namespace)
        ns = self.namespace
        _ip("-n", ns, "link", "set", "lo", "up")
        if _ip("-n", ns, "link", "show", self.bridge, check=False).returncode != 0:
            _ip(
                "-n", ns, "link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"
            )
        _ip("-n", ns, "link", "set", self.bridge, "mtu", str(self.mtu))
        addrs = _ip("-n", ns, "-o", "addr", "show", "dev", self.bridge).stdout
        if f" {self.address} " not in addrs:
            _ip("-n", ns, "addr", "add", self.address, "dev", self.bridge)
        _ip("-n", ns, "link", "set", self.bridge, "up")

    def add_tap(self, tap: str) -> None:
        """A tap on the bridge for one VM; QEMU (run in the namespace) opens it by name."""
        ns = self.namespace
        if _ip("-n", ns, "link", "show", tap, check=False).returncode != 0:
            _ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
        _ip("-n", ns, "link", "set", tap, "mtu", str(self.mtu))
        _ip("-n", ns, "link", "set", tap, "master", self.bridge)
        _ip("-n", ns, "link", "set", tap, "up")

    def links(self) -> list[str]:
        out = _ip("-n", self.namespace, "-o", "link", "show", check=False).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def pids(ns: str) -> list[int]:
    """Processes running inside the namespace (the kernel's view, not our pid files)."""
    res = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def kill_all(ns: str, grace: float = 5.0) -> list[int]:
    """TERM, then KILL, every process inside the namespace; returns the pids found."""
    found = pids(ns)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        alive = [p for p in pids(ns)]
        if not alive:
            break
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pids(ns):
            time.sleep(0.1)
    return found


def destroy(ns: str) -> None:
    """Kill what runs inside, then delete the namespace (its bridge and taps go with it)."""
    if not exists(ns):
        return
    kill_all(ns)
    left = pids(ns)
    if left:
        raise OperationError(f"lab network: processes {left} survive SIGKILL in namespace {ns}")
    _ip("netns", "delete", ns)
