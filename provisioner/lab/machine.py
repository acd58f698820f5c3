"""What a BMC emulator controls: the seam between emulated BMCs and (virtual) machines.

The IPMI and Redfish emulators in this package only ever talk to a ``Machine``. Tests
and the benchmark plug in ``SimulatedMachine`` (in-memory state, a stand-in for a real
server); the lab plugs in a QEMU-backed implementation of the same protocol, so the
emulators and the drivers under test stay the same whether a VM is behind them or not.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable

BootTarget = Literal["pxe", "disk"]


@dataclass(frozen=True)
class BootSetting:
    """The boot override a BMC holds: device, one-time or persistent, UEFI or legacy BIOS."""

    device: BootTarget = "disk"
    persistent: bool = True
    uefi: bool = True


@dataclass(frozen=True)
class MachineIdentity:
    """What a BMC reports about the machine (SMBIOS system info and NIC MACs)."""

    uuid: str
    serial: str
    vendor: str
    model: str
    macs: tuple[str, ...] = ()


@runtime_checkable
class Machine(Protocol):
    """The operations a BMC performs on the machine it manages.

    Implementations must be thread-safe: an emulator may serve several clients at once.
    A one-time (non-persistent) boot override is consumed by the next power-on or reset,
    as real firmware does; ``boot_device`` then reports the persistent default again.
    """

    name: str
    identity: MachineIdentity

    def power_state(self) -> bool: ...

    def power_on(self) -> None: ...

    def power_off(self, hard: bool) -> None: ...

    def reset(self) -> None: ...

    def boot_device(self) -> BootSetting: ...

    def set_boot_device(self, device: BootTarget, persistent: bool, uefi: bool) -> None: ...


@dataclass
class BootSelection:
    """What firmware boots next: a persistent default plus an optional one-time override
    that the next boot uses up, as real BMCs and firmware behave. One definition shared
    by every ``Machine`` implementation; callers hold their machine's lock."""

    default: BootSetting = field(default_factory=BootSetting)
    override: BootSetting | None = None

    def current(self) -> BootSetting:
        return self.override or self.default

    def set(self, device: BootTarget, persistent: bool, uefi: bool) -> None:
        setting = BootSetting(device=device, persistent=persistent, uefi=uefi)
        if persistent:
            self.default, self.override = setting, None
        else:
            self.override = setting

    def take_for_boot(self) -> BootSetting:
        """The setting this boot uses; a one-time override is consumed by it."""
        setting = self.current()
        if self.override is not None and not self.override.persistent:
            self.override = None
        return setting

    def as_dict(self) -> dict[str, object]:
        cur = self.current()
        return {"device": cur.device, "persistent": cur.persistent, "uefi": cur.uefi}


@dataclass
class SimulatedMachine:
    """A stand-in for a physical server: power and boot state in memory, nothing runs.

    It records the boot each power-on would have performed (``boots``) so tests can
    check that a one-time PXE override was used exactly once.
    """

    name: str
    identity: MachineIdentity
    powered: bool = False
    boot: BootSelection = field(default_factory=BootSelection)
    boots: list[BootSetting] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def power_state(self) -> bool:
        with self._lock:
            return self.powered

    def _boot(self) -> None:
        self.boots.append(self.boot.take_for_boot())

    def power_on(self) -> None:
        with self._lock:
            if not self.powered:
                self.powered = True
                self._boot()

    def power_off(self, hard: bool) -> None:
        with self._lock:
            self.powered = False

    def reset(self) -> None:
        with self._lock:
            self.powered = True
            self._boot()

    def boot_device(self) -> BootSetting:
        with self._lock:
            return self.boot.current()

    def set_boot_device(self, device: BootTarget, persistent: bool, uefi: bool) -> None:
        with self._lock:
            self.boot.set(device, persistent, uefi)

    def snapshot(self) -> dict[str, object]:
        """Plain data for the fleet's control channel (tests read state through it)."""
        with self._lock:
            return {
                "name": self.name,
                "powered": self.powered,
                "boot": self.boot.as_dict(),
                "boots": [{"device": b.device, "uefi": b.uefi} for b in self.boots],
            }


@dataclass(frozen=True)
class MachineSpec:
    """Picklable description of one machine, sent to the fleet's child process."""

    name: str
    uuid: str
    serial: str
    macs: tuple[str, ...] = ()
    vendor: str = "Provisioner Lab"
    model: str = "Simulated Machine (stand-in)"
    powered: bool = False
    boot: BootSetting = field(default_factory=BootSetting)

    @property
    def identity(self) -> MachineIdentity:
        return MachineIdentity(self.uuid, self.serial, self.vendor, self.model, self.macs)


def simulated_machine(spec: MachineSpec) -> SimulatedMachine:
    """The default machine factory: importable, so it survives a spawn-started child."""
    return SimulatedMachine(
        name=spec.name, identity=spec.identity, powered=spec.powered, boot=BootSelection(replace(spec.boot))
    )
