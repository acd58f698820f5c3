"""A fake site for the pipeline tests: machines, their BMCs (fake ``Driver``s behind the real
``BMCController``) and the Talos machine API (a fake ``TalosAccess``).

The machines behave like the lab's, in miniature and in threads: a machine powered on with
a one-time PXE override and no installed system "fetches" its config after ``boot_delay``
(the fake writes the ``config.fetch`` event the netboot service would), and answers over
mutual TLS ``install_delay`` later. A silent machine never fetches; a dead BMC never answers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.bmc import (
    BMCController,
    BMCUnavailable,
    BootDevice,
    BootOverride,
    ControllerSettings,
    Identity,
    PowerAction,
    PowerState,
)
from provisioner.events import CONFIG_FETCH, EventLog
from provisioner.inventory.model import Node
from provisioner.talosapi.client import EtcdMember
from provisioner.talosapi.errors import TalosTLSError
from provisioner.workflow.talos_ops import TalosUnavailable

FAST_BMC = ControllerSettings(
    command_timeout=1.0,
    attempts=2,
    backoff_initial=0.01,
    backoff_max=0.02,
    jitter=0.0,
    verify_timeout=0.5,
    boot_verify_timeout=0.5,
    verify_poll=0.01,
)


class Crash(BaseException):
    """Stands for the tool dying (kill -9) at a chosen point: nothing below catches it."""


@dataclass
class Machine:
    name: str
    ip: str
    controlplane: bool
    power: PowerState = PowerState.OFF
    override: BootOverride = field(default_factory=lambda: BootOverride(None, False, True))
    installed_at: float | None = None  # monotonic time from which the installed OS answers
    silent: bool = False  # network boot never reaches the config fetch
    spki: str = "ab" * 32  # the key pin its maintenance mode shows on the console
    lose_install_once: bool = False  # its first install is cut short: it comes up in maintenance
    dead_bmc: bool = False
    reset_lag: float = 0.0  # seconds it still answers over mutual TLS after accepting a Reset
    answers_until: float | None = None
    log: list[str] = field(default_factory=list)  # BMC actions, in order

    @property
    def answers_mtls(self) -> bool:
        if self.answers_until is not None and time.monotonic() < self.answers_until:
            return True  # wiping itself after a Reset, still serving the old OS
        return (
            self.power is PowerState.ON
            and self.installed_at is not None
            and time.monotonic() >= self.installed_at
        )


class World:
    """Every machine of the fake site, and the etcd they would form."""

    def __init__(
        self,
        nodes: list[Node],
        events: Path,
        boot_delay: float = 0.05,
        install_delay: float = 0.05,
        apply_delivery: bool = False,
    ):
        self.apply_delivery = apply_delivery  # network boot ends in maintenance mode, no fetch
        self.machines = {n.name: Machine(n.name, str(n.ip), n.role.value == "controlplane") for n in nodes}
        self.by_ip = {m.ip: m for m in self.machines.values()}
        self.events = EventLog(events)
        self.boot_delay, self.install_delay = boot_delay, install_delay
        self.etcd: list[str] = []  # member hostnames once bootstrapped
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def install_now(self, name: str) -> None:
        m = self.machines[name]
        m.power, m.installed_at = PowerState.ON, time.monotonic()

    def booted(self, m: Machine) -> None:
        """Power came on: network-boot (one-time PXE consumed) unless a disk install boots first."""
        pxe = m.override.device is BootDevice.PXE
        if pxe and not m.override.persistent:
            m.override = BootOverride(None, False, m.override.uefi)
        if m.installed_at is not None and not pxe:
            return
        if pxe and not m.silent and not self.apply_delivery:
            threading.Timer(self.boot_delay, self._fetch, (m,)).start()

    def _fetch(self, m: Machine) -> None:
        if m.power is not PowerState.ON:
            return
        self.events.append(CONFIG_FETCH, node=m.name, ip=m.ip)
        if m.lose_install_once:
            m.lose_install_once = False
            return
        self.calls[f"install:{m.name}"] += 1
        m.installed_at = time.monotonic() + self.install_delay

    def controller(self, node: Node) -> BMCController:
        return BMCController(
            node.name, FakeDriver(self, self.machines[node.name]), FAST_BMC, default_uefi=True
        )


class FakeDriver:
    """One machine's BMC: single-attempt operations, as the ``Driver`` protocol asks."""

    def __init__(self, world: World, machine: Machine) -> None:
        self.world, self.m = world, machine
        self.endpoint = f"fake://{machine.name}"

    def _check(self, action: str) -> None:
        if self.m.dead_bmc:
            raise BMCUnavailable(self.m.name, self.endpoint, action, "no route to host")

    def power_state(self) -> PowerState:
        self._check("power status")
        return self.m.power

    def power(self, action: PowerAction) -> None:
        self._check(f"power {action.value}")
        with self.world.lock:
            self.m.log.append(f"power {action.value}")
            was = self.m.power
            if action in (PowerAction.OFF, PowerAction.SOFT_OFF):
                self.m.power = PowerState.OFF
            elif action is PowerAction.ON:
                self.m.power = PowerState.ON
                if was is PowerState.OFF:
                    self.world.booted(self.m)
            elif action in (PowerAction.CYCLE, PowerAction.RESET):
                self.m.power = PowerState.ON
                self.world.booted(self.m)

    def boot_override(self) -> BootOverride:
        self._check("boot override")
        return self.m.override

    def set_boot_override(self, device: BootDevice, persistent: bool, uefi: bool) -> None:
        self._check("set boot override")
        self.m.log.append(f"boot {device.value}{' persistent' if persistent else ''}")
        self.m.override = BootOverride(device, persistent, uefi)

    def identity(self) -> Identity:
        self._check("identity")
        return Identity(serial=self.m.name)

    def reset_session(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeTalos:
    """The machine API of the fake machines (``TalosAccess``). ``crash_after_bootstrap``
    makes the tool "die" right after etcd was bootstrapped, before anything was recorded."""

    def __init__(self, world: World, crash_after_bootstrap: bool = False) -> None:
        self.world = world
        self.crash_after_bootstrap = crash_after_bootstrap

    def _machine(self, ip: str) -> Machine:
        return self.world.by_ip[ip]

    async def maintenance_ready(self, ip: str) -> bool:
        m = self._machine(ip)
        return m.power is PowerState.ON and m.installed_at is None

    async def apply_config(self, ip: str, data: bytes, pin: str | None = None) -> None:
        m = self._machine(ip)
        if pin is not None and pin != m.spki:
            raise TalosTLSError(
                f"{ip}:50000", "ApplyConfiguration", "server certificate does not match the pin"
            )
        self.world.calls["apply"] += 1
        self.world.calls[f"install:{m.name}"] += 1
        m.installed_at = time.monotonic() + self.world.install_delay

    async def secure_version(self, ip: str) -> str | None:
        return "v1.11.6-fake" if self._machine(ip).answers_mtls else None

    async def etcd_members(self, ip: str) -> list[EtcdMember]:
        m = self._machine(ip)
        if not m.answers_mtls:
            raise TalosUnavailable(ip, "EtcdMemberList", "connection refused", "UNAVAILABLE")
        if not self.world.etcd:
            return []
        # Every installed control plane joins once etcd exists (the fake has no learners).
        for other in self.world.machines.values():
            if other.controlplane and other.answers_mtls and other.name not in self.world.etcd:
                self.world.etcd.append(other.name)
        return [EtcdMember(i, h, (), (), False) for i, h in enumerate(self.world.etcd, 1)]

    async def bootstrap(self, ip: str) -> None:
        self.world.calls["bootstrap"] += 1
        self.world.etcd = [self._machine(ip).name]
        if self.crash_after_bootstrap:
            raise Crash("killed between Bootstrap and the cluster record")

    async def kubeconfig(self, ip: str) -> bytes:
        return b"apiVersion: v1\nkind: Config\nclusters: []\n"

    async def reset(self, ip: str, graceful: bool) -> None:
        m = self._machine(ip)
        self.world.calls["reset-graceful" if graceful else "reset"] += 1
        if m.reset_lag:
            m.answers_until = time.monotonic() + m.reset_lag
        m.installed_at = None
        if m.name in self.world.etcd:
            self.world.etcd.remove(m.name)
