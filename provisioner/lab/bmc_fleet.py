"""Start many emulated BMCs (stand-ins for hardware BMCs) in child processes, stop them cleanly.

A fleet is described by a picklable ``FleetSpec``: which machines sit behind IPMI BMCs
(one UDP port each) and which behind Redfish services (sushy-tools, one or more HTTP(S)
ports). IPMI and Redfish run in separate child processes, each a fresh interpreter
(``python -m provisioner.lab.bmc_fleet``): pyghmi keeps process-global session state
and an I/O thread, so the emulators must never share a process with a pyghmi client
(the driver under test), and a forked copy of a process that already used pyghmi would
inherit a dead I/O thread. (multiprocessing's spawn would re-import the caller's main
module, which breaks scripts; a plain subprocess with a socketpair does not.)

Large fleets are split over several child processes per protocol (``FleetSpec.processes``;
by default one per ``BMCS_PER_PROCESS`` BMCs, at most one per CPU): one Python process
serving 100 BMCs is bound to one core by its interpreter lock, and a queue of requests
behind it would be charged to the code under test.

Tests, the benchmark and the lab use it the same way; the lab passes its own
``machine_factory`` (QEMU-backed machines) and a bind address inside its namespace.
A control pipe lets the parent read machine state and request counts, and closing it
stops the child.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .faults import FaultInjector, FaultSpec
from .machine import Machine, MachineSpec, simulated_machine

log = logging.getLogger("provisioner.lab.bmc-fleet")

MachineFactory = Callable[[MachineSpec], Machine]


@dataclass(frozen=True)
class IpmiBmcSpec:
    machine: MachineSpec
    port: int = 0  # 0: any free port, reported back by ``BmcFleet.ports``
    address: str | None = None  # its own listening address (default: the fleet's ``address``)


@dataclass(frozen=True)
class RedfishServiceSpec:
    machines: tuple[MachineSpec, ...]
    port: int = 0


@dataclass(frozen=True)
class FleetSpec:
    workdir: Path  # TLS material and the auth file go here
    username: str = "admin"
    password: str = field(default="", repr=False)
    address: str = "127.0.0.1"
    ipmi: tuple[IpmiBmcSpec, ...] = ()
    redfish: tuple[RedfishServiceSpec, ...] = ()
    tls: bool = True
    faults: FaultSpec = field(default_factory=FaultSpec)
    hang: float = 10.0  # how long an injected Redfish timeout holds the request
    machine_factory: MachineFactory = simulated_machine
    log_level: int = logging.WARNING
    processes: int = 0  # child processes per protocol; 0: automatic (see shards())

    def shards(self, kind: str) -> int:
        """How many child processes serve the BMCs of ``kind`` (ipmi or redfish)."""
        count = len(getattr(self, kind))
        if count == 0:
            return 0
        if self.processes > 0:
            return min(self.processes, count)
        return max(1, min(os.cpu_count() or 1, -(-count // BMCS_PER_PROCESS)))


BMCS_PER_PROCESS = 50


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # ipmi | redfish
    address: str
    port: int


class BmcFleet:
    """Context manager running the fleet; ``ports`` maps machine name -> its BMC endpoint."""

    def __init__(self, spec: FleetSpec, start_timeout: float = 60.0) -> None:
        self.spec = spec
        self.start_timeout = start_timeout
        self.endpoints: dict[str, Endpoint] = {}
        self._children: list[tuple[subprocess.Popen[bytes], multiprocessing.connection.Connection]] = []
        self._lock = threading.Lock()
        self.ca_file: Path | None = None

    def __enter__(self) -> BmcFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from .redfish_bmc import make_tls_material, write_htpasswd

        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        if self.spec.redfish:
            write_htpasswd(
                self.spec.workdir / "redfish-users.htpasswd", self.spec.username, self.spec.password
            )
            if self.spec.tls:
                self.ca_file = make_tls_material(
                    self.spec.workdir / "tls", (self.spec.address, "localhost")
                ).ca
        children = [
            (k, i, self.spec.shards(k)) for k in ("ipmi", "redfish") for i in range(self.spec.shards(k))
        ]
        try:
            for kind, shard, shards in children:
                parent_sock, child_sock = socket.socketpair()
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "provisioner.lab.bmc_fleet",
                        kind,
                        str(child_sock.fileno()),
                        f"{shard}/{shards}",
                    ],
                    pass_fds=(child_sock.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
                child_sock.close()
                conn = multiprocessing.connection.Connection(parent_sock.detach())
                self._children.append((proc, conn))
                conn.send(self.spec)
            for proc, conn in self._children:
                what = f"BMC emulator child (pid {proc.pid})"
                if not conn.poll(self.start_timeout):
                    raise RuntimeError(f"{what} did not start within {self.start_timeout:.0f}s")
                try:
                    status, payload = conn.recv()
                except EOFError:
                    raise RuntimeError(f"{what} exited during start-up (exit code {proc.wait()})") from None
                if status != "ready":
                    raise RuntimeError(f"{what} failed to start: {payload}")
                for name, (protocol, port, address) in payload.items():
                    self.endpoints[name] = Endpoint(protocol, address, port)
        except BaseException:
            self.stop()
            raise

    def _ask(self, message: tuple[Any, ...]) -> list[Any]:
        answers = []
        with self._lock:
            for _proc, conn in self._children:
                conn.send(message)
                answers.append(conn.recv())
        return answers

    def state(self, name: str) -> dict[str, Any]:
        """The machine's power and boot state as the emulator holds it."""
        for found in self._ask(("state", name)):
            if found is not None:
                return found  # type: ignore[no-any-return]
        raise KeyError(name)

    def states(self) -> dict[str, dict[str, Any]]:
        """Every machine's state in one question per child process (a large fleet's read-out)."""
        out: dict[str, dict[str, Any]] = {}
        for found in self._ask(("states",)):
            out.update(found)
        return out

    def stats(self) -> dict[str, int]:
        """Requests served and faults injected, summed over the child processes."""
        total: dict[str, int] = {}
        for s in self._ask(("stats",)):
            for k, v in s.items():
                total[k] = total.get(k, 0) + v
        return total

    def stats_by_protocol(self) -> dict[str, dict[str, int]]:
        """``stats()`` per protocol (``ipmi``, ``redfish``): a benchmark splits round trips by kind."""
        kinds = ["ipmi"] * self.spec.shards("ipmi") + ["redfish"] * self.spec.shards("redfish")
        total: dict[str, dict[str, int]] = {}
        for kind, s in zip(kinds, self._ask(("stats",)), strict=True):
            bucket = total.setdefault(kind, {})
            for k, v in s.items():
                bucket[k] = bucket.get(k, 0) + v
        return total

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the emulator child processes have used so far."""
        return float(sum(self._ask(("cpu",))))

    def stop(self) -> None:
        for _proc, conn in self._children:
            with contextlib.suppress(OSError, EOFError):
                conn.send(("stop",))
        for proc, conn in self._children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=5)
            conn.close()
        self._children.clear()


def _snapshot(machine: Machine) -> dict[str, Any]:
    snap = getattr(machine, "snapshot", None)
    if callable(snap):
        return snap()  # type: ignore[no-any-return]
    boot = machine.boot_device()
    return {
        "name": machine.name,
        "powered": machine.power_state(),
        "boot": {"device": boot.device, "persistent": boot.persistent, "uefi": boot.uefi},
    }


def _child_main(
    kind: str, conn: multiprocessing.connection.Connection, shard: int = 0, shards: int = 1
) -> None:
    """Entry point of an emulator child process: build the BMCs, serve, answer the pipe.

    The child serves every ``shards``-th BMC of its ``kind``, starting at ``shard``.
    """
    spec: FleetSpec = conn.recv()
    logging.basicConfig(
        level=spec.log_level, format=f"%(asctime)s bmc-emulator[{kind}] %(levelname)s %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(max(spec.log_level, logging.WARNING))
    stop = threading.Event()
    # Each process gets its own RNG stream, still reproducible from the one seed.
    faults = FaultInjector(
        FaultSpec(**{**spec.faults.__dict__, "seed": spec.faults.seed + (kind == "redfish") + 2 * shard})
    )
    machines: dict[str, Machine] = {}
    try:
        if kind == "ipmi":
            from .ipmi_bmc import DelayQueue, EmulatedIpmiBmc, serve

            delays = DelayQueue()
            bmcs = []
            ports: dict[str, tuple[str, int, str]] = {}
            for b in spec.ipmi[shard::shards]:
                m = spec.machine_factory(b.machine)
                machines[m.name] = m
                address = b.address or spec.address
                bmc = EmulatedIpmiBmc(m, spec.username, spec.password, b.port, address, faults, delays)
                bmcs.append(bmc)
                ports[m.name] = ("ipmi", bmc.serversocket.getsockname()[1], address)
            runner = threading.Thread(target=serve, args=(bmcs, delays, stop), daemon=True)
        else:
            from .redfish_bmc import RedfishEmulator, TlsFiles

            tls_dir = spec.workdir / "tls"
            tls = (
                TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server-key.pem")
                if spec.tls
                else None
            )
            ports = {}
            emulators = []
            for service in spec.redfish[shard::shards]:
                service_machines = {}
                for ms in service.machines:
                    m = spec.machine_factory(ms)
                    machines[m.name] = service_machines[m.name] = m
                emulators.append((service, service_machines))
            emu = RedfishEmulator(
                machines,
                spec.address,
                [(s.port, frozenset(ms)) for s, ms in emulators],
                spec.workdir / "redfish-users.htpasswd",
                tls,
                faults,
                hang=spec.hang,
            )
            for server, (_service, service_machines) in zip(emu._servers, emulators, strict=True):
                for name in service_machines:
                    ports[name] = ("redfish", server.server_port, spec.address)
            emu.start()
            runner = threading.Thread(target=stop.wait, daemon=True)
        runner.start()
        conn.send(("ready", ports))
    except Exception as exc:  # report, then exit: the parent raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "stop":
                break
            if message[0] == "state":
                found = machines.get(message[1])
                conn.send(_snapshot(found) if found is not None else None)
            elif message[0] == "states":
                conn.send({name: _snapshot(m) for name, m in machines.items()})
            elif message[0] == "stats":
                conn.send(faults.stats())
            elif message[0] == "cpu":
                conn.send(time.process_time())
    finally:
        stop.set()
        if kind == "redfish":
            emu.stop()
        runner.join(timeout=5)
        log.info("BMC emulator child %s (pid %d) stopped", kind, os.getpid())


if __name__ == "__main__":
    _shard, _shards = (int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0/1").split("/"))
    _child_main(sys.argv[1], multiprocessing.connection.Connection(int(sys.argv[2])), _shard, _shards)
