"""Run the real `provisioner up` against a simulated fleet and measure the `up` process only.

Everything runs in a private network namespace (``unshare --net``, entered by re-executing the
command): the fleet's 127.x addresses, BMC ports and the netboot
service's dnsmasq (bound to that namespace's ``lo``, where no machine ever sends DHCP: the simulated
machines start at iPXE's HTTP requests) can never collide with the host or with another fleet.

Measured from outside the `up` process: wall time from its start to its exit and to the cluster's
``formed`` event, its CPU seconds and peak RSS (``wait4`` rusage), what every simulated node was asked
(BMC round trips counted by the emulators, HTTP requests its netboot client made, Talos API calls its
stand-in answered), and the cost of one event-log poll as `up` makes it, on the final log.
"""

from __future__ import annotations

import json
import linecache
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...events import EventLog
from ...layout import StateLayout
from ..bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec, RedfishServiceSpec
from ..faults import FaultSpec
from .node import FleetMachineFactory, read_counts
from .plan import PASSWORD_FILE, FleetPlan

NETNS_MARK = "PROVISIONER_FLEET_NETNS"
PASSWORD = "fleet-bmc-password"


def in_private_netns() -> bool:
    return os.environ.get(NETNS_MARK) == "1"


def reexec_in_netns(argv: list[str]) -> int:
    """Run ``python argv...`` again inside a new network namespace; returns its exit code."""
    unshare = shutil.which("unshare")
    if unshare is None:
        print("error: unshare (util-linux) is needed to give the fleet its own network", file=sys.stderr)
        return 2
    env = {**os.environ, NETNS_MARK: "1"}
    return subprocess.call([unshare, "--net", "--", sys.executable, *argv], env=env)


def loopback_up() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def machine_busy_seconds() -> float:
    """CPU time every core has spent busy since boot (``/proc/stat``: all but idle and iowait):
    the difference over a run is what the run, its simulators and anything else on the machine
    used, i.e. how close the run came to the machine's CPU ceiling."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class FleetResult:
    nodes: int
    exit_code: int  # after a stop at the first Kubernetes stage (``stopped_s``): how `up` took SIGTERM
    stopped_s: float | None  # up started -> it started the first stage needing a Kubernetes API
    wall_s: float  # up started -> up exited, or -> ``stopped_s``
    formed_s: float | None  # up started -> cluster "formed" event
    cpu_s: float  # user + system of the up process (and anything it waited for)
    sys_cpu_s: float  # the kernel's part of it (file and socket work on `up`'s behalf)
    machine_cpu_s: float  # every CPU's busy time while `up` ran (up, the simulators, anything else)
    cores: int  # CPUs the machine has
    # The run's memory: the sampled peak of `up`'s RSS plus the private memory of the processes it
    # started (its netboot service, BMC workers if any; ``GroupMemory``), or `up`'s rusage peak if
    # that is larger (the sampling can miss a short peak).
    peak_rss_mb: float
    bmc_workers: int  # BMC worker processes `up` ran at once (``bmcprocs``; 0: its own threads)
    installed: int  # state records marked installed
    ready: int  # state records in phase ready
    bootstraps: list[str]
    bmc_ipmi_per_node: float  # IPMI datagrams answered per IPMI node (session set-up included)
    bmc_redfish_per_node: float  # HTTP requests per Redfish node
    http_per_node: float  # netboot requests a node's client made
    talos_per_node: float  # Talos API calls its stand-in answered (cluster calls included)
    talos_calls: dict[str, int]
    ipmi_nodes: int
    redfish_nodes: int
    event_lines: int
    event_poll_ms: float  # one poll for a node's new events, as `up` polls, on the final log
    up_output: dict[str, Any] = field(default_factory=dict)
    per_node: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every node ready, the cluster formed, and `up` either exited 0 or reached the
        Kubernetes stages (where the fleet stops it; its exit code then says how it took SIGTERM)."""
        done = self.exit_code == 0 or self.stopped_s is not None
        return done and self.formed_s is not None and self.ready == self.nodes

    @property
    def cpu_ms_per_node(self) -> float:
        return self.cpu_s * 1000 / self.nodes

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok, "cpu_ms_per_node": self.cpu_ms_per_node}, indent=1)


def write_assets(plan: FleetPlan) -> None:
    """Tiny kernel and initramfs where `up`'s netboot service looks for them (the simulated
    machines never download them; the iPXE script is only offered when they exist)."""
    from ...inventory import load_inventory
    from ...netboot.assets import asset_set
    from ...netboot.ipxe import INITRAMFS, KERNEL

    site = load_inventory(plan.inventory).site
    directory = asset_set(site, plan.assets_root).directory
    directory.mkdir(parents=True, exist_ok=True)
    for name in (KERNEL, INITRAMFS):
        (directory / name).write_bytes(b"talos stand-in (simulated fleet): not a kernel\n")


# The first stage that needs a Kubernetes API, which the fleet does not simulate: `up` is stopped
# when it starts it (the run under test ends at the cluster formed).
FIRST_KUBERNETES_STAGE = "api-ready"


def _watch(
    events: Path, started: float, stop: threading.Event, out: dict[str, float], proc: subprocess.Popen[bytes]
) -> None:
    """Note when `up` records the cluster formed, and stop it where the simulation ends."""
    log = EventLog(events)
    since = 0
    while not stop.wait(0.1):
        if not events.exists():
            continue
        for ev in log.iter(since):
            since = max(since, ev.id)
            if ev.kind == "cluster.step" and ev.data.get("step") == "formed":
                out["formed"] = ev.time - started
            elif (
                ev.kind == "pipeline.stage"
                and ev.data.get("stage") == FIRST_KUBERNETES_STAGE
                and "stopped" not in out
            ):
                out["stopped"] = ev.time - started
                proc.send_signal(signal.SIGTERM)
                return


def poll_cost(events_path: Path, samples: int = 200) -> float:
    """Milliseconds for one node's poll as `up` makes it (``EventLog.iter(since)`` on its long-lived
    log, looking for the node's config fetch), with ``since`` a recent id on the final log."""
    log = EventLog(events_path)
    last = log.last_id()
    since = max(0, last - 50)
    list(log.iter(since))  # warm, as a long-running poller is
    t0 = time.perf_counter()
    for _ in range(samples):
        any(ev.kind == "config.fetch" and ev.node == "cp1" for ev in log.iter(since))
    return (time.perf_counter() - t0) * 1000 / samples


SAMPLE_RATE = 50  # py-spy samples per second: cheap enough not to move the figures


Sampler = tuple[threading.Timer, list[subprocess.Popen[bytes]]]


def _kb(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


_BMC_WORKER = b"provisioner.workflow.bmcprocs"  # in a BMC worker process's command line


class GroupMemory:
    """The peak memory of `up` and the processes it started (its netboot service, its BMC
    workers), sampled from ``/proc`` every ``interval`` seconds: `up`'s RSS plus each child's
    private memory (USS). The children map the same interpreter and libraries as `up`: counting
    their RSS would count those pages twice; counting only `up`'s rusage (the largest single
    process) would leave the children out."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.bmc_workers = 0  # the most BMC worker processes seen among the children at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _children(self) -> list[int]:
        try:
            tasks = Path(f"/proc/{self.pid}/task").iterdir()
            found: list[int] = []
            for task in tasks:
                found += [int(c) for c in (task / "children").read_text().split()]
            return found
        except OSError:
            return []

    def sample(self) -> int:
        try:
            total = _kb(Path(f"/proc/{self.pid}/status").read_text(), "VmRSS:")
        except OSError:
            return 0
        workers = 0
        for child in self._children():
            try:
                rollup = Path(f"/proc/{child}/smaps_rollup").read_text()
                workers += _BMC_WORKER in Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            total += _kb(rollup, "Private_Clean:") + _kb(rollup, "Private_Dirty:")
        self.bmc_workers = max(self.bmc_workers, workers)
        return total

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak_kb = max(self.peak_kb, self.sample())

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def _start_sampler(pid: int, out: Path, delay: float = 1.5) -> Sampler:
    """Sample `up` (every thread, idle ones left out) with py-spy into ``out`` (collapsed stacks),
    once its interpreter is up (attaching at once fails to find it). Measured from outside, so
    `up`'s own figures are unchanged; py-spy ends when `up` does."""
    started: list[subprocess.Popen[bytes]] = []
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

    def start() -> None:
        cmd = [spy, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--nonblocking"]
        cmd += ["--format", "raw", "-o", str(out)]
        started.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    timer = threading.Timer(delay, start)
    timer.start()
    return timer, started


# What a sampled line that blocks calls: py-spy cannot tell idle threads apart here (no thread
# state under this sandbox), so a sample is called blocking by its source line instead.
_BLOCKING = {
    "fsync": ("fsync(",),
    "waits": (".wait(", ".acquire(", "sleep(", ".get()", ".get(timeout=", "get(block=True)", "flock("),
    # " read(": os.read imported bare (multiprocessing's pipe end, waiting for the next message).
    "I/O": ("select(", ".poll(", ".read(", " read(", ".recv", "recvfrom(", ".accept("),
}


_SOURCE_ROOTS = tuple(dict.fromkeys(sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")))


def _blocking(frame: str) -> str | None:
    """Which kind of blocking call py-spy's frame ``func (file:line)`` is on, or None."""
    where = frame.rpartition(" (")[2].rstrip(")")
    filename, _, line = where.rpartition(":")
    if not line.isdigit():
        return None
    if frame.startswith(("Condition.wait ", "Event.wait ", "protect.__enter__ ")):
        return "waits"
    text = ""
    for root in ("", *_SOURCE_ROOTS):
        text = linecache.getline(str(Path(root) / filename), int(line))
        if text:
            break
    for kind, calls in _BLOCKING.items():
        if any(call in text for call in calls):
            return kind
    return None


def top_self(sample: Path, count: int = 5) -> tuple[list[tuple[str, float, float]], dict[str, float]]:
    """From py-spy's collapsed output: the functions most often on top of a stack while running
    (function, estimated seconds, share of running samples), and the seconds of samples spent in
    blocking calls by kind (fsync, waits, I/O), which are left out of the first."""
    running: dict[str, int] = {}
    blocked: dict[str, int] = {}
    kinds: dict[str, str | None] = {}
    for line in sample.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        if leaf not in kinds:
            kinds[leaf] = _blocking(leaf)
        kind = kinds[leaf]
        if kind is None:
            running[leaf] = running.get(leaf, 0) + int(n)
        else:
            blocked[kind] = blocked.get(kind, 0) + int(n)
    total = sum(running.values())
    top = sorted(running.items(), key=lambda kv: kv[1], reverse=True)[:count]
    return (
        [(name, n / SAMPLE_RATE, n / max(total, 1)) for name, n in top],
        {kind: n / SAMPLE_RATE for kind, n in sorted(blocked.items())},
    )


def _say(what: str) -> None:
    """Progress on stderr, with a timestamp: where a slow fleet run spends its time."""
    print(f"{time.strftime('%H:%M:%S')} fleet: {what}", file=sys.stderr, flush=True)


def run(
    plan: FleetPlan,
    up_args: tuple[str, ...] = (),
    profile: Path | None = None,
    timeout: float = 600.0,
    emulator_processes: int = 0,
    sample: Path | None = None,
) -> FleetResult:
    """Start the fleet, run `up` on its inventory, measure, stop the fleet. Call in a private netns.
    ``profile``: cProfile `up`'s main thread into that file; ``sample``: py-spy `up`'s threads."""
    plan.workdir.mkdir(parents=True, exist_ok=True)
    plan.write_password(PASSWORD)
    machines = [plan.machine(i) for i in range(plan.nodes)]
    spec = FleetSpec(
        workdir=plan.workdir / "bmc",
        password=PASSWORD,
        address="127.0.0.1",
        ipmi=tuple(
            IpmiBmcSpec(m, plan.bmc_port(i), plan.bmc_ip(i))
            for i, m in enumerate(machines)
            if not plan.is_redfish(i)
        ),
        redfish=tuple(RedfishServiceSpec((m,)) for i, m in enumerate(machines) if plan.is_redfish(i)),
        faults=FaultSpec(latency=plan.delays.bmc_latency),
        machine_factory=FleetMachineFactory(plan),
        processes=emulator_processes,
    )
    _say(f"starting {plan.nodes} simulated machines and their BMCs")
    with BmcFleet(spec, start_timeout=300) as fleet:
        _say("BMCs up; writing the inventory")
        endpoints = {n: (e.protocol, e.address, e.port) for n, e in fleet.endpoints.items()}
        plan.write_inventory(endpoints, fleet.ca_file)
        write_assets(plan)
        before = fleet.stats_by_protocol()
        cmd = [sys.executable, "-m", "provisioner.lab.fleet.upmain"]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        cmd += ["-i", str(plan.inventory), "-o", "json", "up", *up_args]
        env = {**os.environ, "PROVISIONER_ASSETS_DIR": str(plan.assets_root)}
        stop = threading.Event()
        formed: dict[str, float] = {}
        events_path = StateLayout(plan.state_dir).events
        log_file = open(plan.workdir / "up.log", "w")  # noqa: SIM115 - handed to the child
        _say("running `provisioner up`")
        started = time.time()
        busy_before = machine_busy_seconds()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, env=env)
        log_file.close()
        memory = GroupMemory(proc.pid)
        sampler = _start_sampler(proc.pid, sample) if sample is not None else None
        watcher = threading.Thread(
            target=_watch, args=(events_path, started, stop, formed, proc), daemon=True
        )
        watcher.start()
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        assert proc.stdout is not None
        out = proc.stdout.read()
        group_mb = memory.stop()  # `up` closed its stdout: it is exiting, its workers are gone
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - started
        machine_cpu = machine_busy_seconds() - busy_before
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler is not None:
            sampler[0].cancel()
            for spy in sampler[1]:
                try:
                    spy.wait(timeout=30)  # it writes its file once `up` is gone
                except subprocess.TimeoutExpired:
                    spy.kill()
        stop.set()
        watcher.join()
        if "stopped" in formed:  # stopped at the first Kubernetes stage: the run ended there
            wall = formed["stopped"]
        _say(f"`up` ended (exit {proc.returncode}) after {wall:.1f} s; reading the fleet's counts")
        after = fleet.stats_by_protocol()
        states = fleet.states()
        _say("stopping the fleet")
    from ...state import Phase, StateStore

    _say("fleet stopped")
    store = StateStore(plan.state_dir)
    records = [store.node(plan.name(i)) for i in range(plan.nodes)]
    counts = read_counts(list(states.values()))
    redfish_nodes = sum(1 for i in range(plan.nodes) if plan.is_redfish(i))
    ipmi_nodes = plan.nodes - redfish_nodes

    def delta(kind: str, key: str) -> int:
        return after.get(kind, {}).get(key, 0) - before.get(kind, {}).get(key, 0)

    try:
        up_output = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        up_output = {"unparsed": out.decode("utf-8", "replace")[-2000:]}
    from .cluster import SharedEtcd

    return FleetResult(
        nodes=plan.nodes,
        exit_code=proc.returncode,
        stopped_s=formed.get("stopped"),
        wall_s=wall,
        formed_s=formed.get("formed"),
        cpu_s=usage.ru_utime + usage.ru_stime,
        sys_cpu_s=usage.ru_stime,
        machine_cpu_s=machine_cpu,
        cores=os.cpu_count() or 1,
        peak_rss_mb=max(usage.ru_maxrss / 1024, group_mb),
        bmc_workers=memory.bmc_workers,
        installed=sum(1 for r in records if r.installed),
        ready=sum(1 for r in records if r.phase is Phase.READY),
        bootstraps=SharedEtcd(plan.etcd_file).bootstraps(),
        bmc_ipmi_per_node=delta("ipmi", "replies") / max(ipmi_nodes, 1),
        bmc_redfish_per_node=delta("redfish", "requests") / max(redfish_nodes, 1),
        http_per_node=counts["http"] / plan.nodes,
        talos_per_node=counts["talos"] / plan.nodes,
        talos_calls={k.removeprefix("talos."): v for k, v in counts.items() if k.startswith("talos.")},
        ipmi_nodes=ipmi_nodes,
        redfish_nodes=redfish_nodes,
        event_lines=sum(1 for _ in open(events_path, "rb")) if events_path.exists() else 0,
        event_poll_ms=poll_cost(events_path) if events_path.exists() else 0.0,
        up_output=up_output,
        per_node={n: dict(s.get("counts", {})) for n, s in states.items()},
    )


__all__ = ["PASSWORD_FILE", "FleetResult", "in_private_netns", "loopback_up", "reexec_in_netns", "run"]
