"""The virtual lab's lifecycle: ``up`` builds the site's hardware, ``down`` removes all of it.

``up`` turns an inventory into: a ``pvlab-<cluster>`` network namespace whose bridge holds
the management gateway address; one tap, two QEMU disks and a VM description per node
(VMs start powered off); and a lab daemon inside the namespace running the BMC fleet
(IPMI and Redfish emulators on the inventory's BMC address/ports) whose machines are
QEMU VMs. State (pids, endpoints) goes to the lab directory (``.lab/`` by default), with
the generated BMC password (0600) and the Redfish CA the inventory references.
``down`` kills every process in the namespace, deletes it (bridge and taps go with it)
and removes the disks, so nothing is left even after a crashed ``up``.

A rack with a ``boot_server`` becomes a routed segment of its own (``segments.py``: a router
namespace, the site's DHCP server there, a boot-server namespace running sshd); its VMs'
taps sit on that segment and their QEMU runs in the router namespace.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bmc import registry as bmc_registry
from ..errors import InputError, OperationError
from ..fsutil import atomic_write, private_dir, write_once
from ..inventory.model import Node, Site
from ..layout import StateLayout
from ..workflow.reset import forget_nodes
from . import netns, segments
from .qemu import Disk, QemuSpec

log = logging.getLogger(__name__)

DEFAULT_LAB_DIR = Path(".lab")
BRIDGE = "pvlab-br0"
MAX_VMS = 4  # TCG: CPU is the limit; more than 4 parallel boots starve a 2-core host
INSTALL_DISK_GIB = 8
DATA_DISK_GIB = 2


def lab_dir_default() -> Path:
    return Path(os.environ.get("PROVISIONER_LAB_DIR", DEFAULT_LAB_DIR))


@dataclass(frozen=True)
class LabPaths:
    """Files of one lab; the inventory references ``bmc_password`` and ``redfish_ca``."""

    root: Path

    @property
    def bmc_password(self) -> Path:
        return self.root / "bmc-password"

    @property
    def redfish_ca(self) -> Path:
        return self.root / "redfish-ca.pem"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    @property
    def bmc_workdir(self) -> Path:
        return self.root / "bmc"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def ready(self) -> Path:
        return self.root / "daemon-ready.json"

    @property
    def image(self) -> Path:
        return self.root / "image"


@dataclass(frozen=True)
class NodePlan:
    node: str
    protocol: str
    port: int
    vm: QemuSpec
    uefi: bool = False  # the BMC's initial EFI boot flag (the node's boot.mode)
    segment: str | None = None  # the routed rack the VM's tap sits on


@dataclass(frozen=True)
class LabPlan:
    """What ``up`` creates for a site, checked before anything is touched."""

    namespace: str
    address: str  # gateway/prefix on the bridge
    bmc_address: str
    username: str
    nodes: tuple[NodePlan, ...]
    segments: tuple[segments.SegmentPlan, ...] = ()


def _disk_index(path: str, where: str) -> int:
    name = path.removeprefix("/dev/")
    if not (len(name) == 3 and name.startswith("vd") and name[2].isalpha()):
        raise InputError(f"{where}: {path!r}: lab VMs have virtio disks; use /dev/vda, /dev/vdb, ...")
    return ord(name[2]) - ord("a")


def _vm_disks(node: Node, vmdir: Path, where: str) -> tuple[Disk, ...]:
    wanted = {_disk_index(node.install_disk, f"{where}.install_disk"): INSTALL_DISK_GIB}
    for d in node.data_disks:
        i = _disk_index(d, f"{where}.data_disks")
        if i in wanted:
            raise InputError(f"{where}.data_disks: {d} is also the install disk")
        wanted[i] = DATA_DISK_GIB
    if sorted(wanted) != list(range(len(wanted))):
        raise InputError(
            f"{where}: lab disks must be consecutive from /dev/vda (the guest names them in order)"
        )
    return tuple(Disk(str(vmdir / f"vd{chr(ord('a') + i)}.qcow2"), wanted[i]) for i in sorted(wanted))


def plan(site: Site, paths: LabPaths) -> LabPlan:
    """Check the inventory describes a lab this module can build; say exactly what is wrong."""
    src = site.source
    if site.networks is None:
        raise InputError(f"{src}: networks.management is required for a lab")
    mgmt = site.networks.management
    if not site.nodes:
        raise InputError(f"{src}: nodes: a lab needs at least one node")
    if len(site.nodes) > MAX_VMS:
        raise InputError(
            f"{src}: nodes: {len(site.nodes)} nodes; the lab runs at most {MAX_VMS} VMs (TCG, CPU-bound)"
        )
    gateway = str(mgmt.gateway)
    usernames = set()
    ports: dict[int, str] = {}
    nodes = []
    vms = paths.vms.resolve()
    routed = {seg.rack: seg for seg in segments.plan_segments(site)}
    for i, n in enumerate(site.nodes):
        where = f"{src}: nodes[{i}] ({n.name})"
        if n.bmc is None:
            raise InputError(f"{where}.bmc: every lab node needs a BMC (the lab emulates it)")
        if n.bmc.address != gateway:
            raise InputError(
                f"{where}.bmc.address: {n.bmc.address}; lab BMCs listen on the gateway {gateway}"
            )
        # The emulator standing in for the protocol comes from the BMC registry, like the driver.
        emulator = bmc_registry.lookup(n.bmc.protocol).lab_emulator
        if emulator is None:
            raise InputError(f"{where}.bmc.protocol: the lab has no emulator for {n.bmc.protocol}")
        port = n.bmc.effective_port
        if port in ports and not (emulator == "redfish" and ports[port] == "redfish"):
            raise InputError(f"{where}.bmc.port: {port} is already used by another lab BMC")
        ports[port] = emulator
        if emulator == "redfish" and getattr(n.bmc, "system_id", None) not in (None, n.name):
            raise InputError(
                f"{where}.bmc.system_id: the lab names each Redfish system after its node ({n.name})"
            )
        usernames.add(n.bmc.username)
        vmdir = vms / n.name
        seg = routed.get(n.rack)
        vm = QemuSpec(
            name=n.name,
            namespace=seg.router_ns if seg else netns.namespace_name(site.cluster.name),
            tap=netns.ifname("t", n.name),
            mac=n.boot.mac,
            uuid=n.uuid or _uuid_for(n.name),
            serial=n.serial or f"PVLAB-{n.name.upper()}",
            workdir=str(vmdir),
            disks=_vm_disks(n, vmdir, where),
        )
        uefi = n.boot.mode.value == "uefi"
        nodes.append(NodePlan(n.name, emulator, port, vm, uefi, seg.rack if seg else None))
    if len(usernames) != 1:
        raise InputError(
            f"{src}: nodes[*].bmc.username: the lab's BMCs share one user; found {sorted(usernames)}"
        )
    return LabPlan(
        namespace=netns.namespace_name(site.cluster.name),
        address=f"{gateway}/{mgmt.subnet.prefixlen}",
        bmc_address=gateway,
        username=usernames.pop(),
        nodes=tuple(nodes),
        segments=tuple(routed.values()),
    )


def _uuid_for(name: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.pvlab"))


def ensure_password(site: Site, paths: LabPaths) -> str:
    """Generate the BMC password once (0600) and check the inventory references that file."""
    private_dir(paths.root)
    write_once(paths.bmc_password, secrets.token_urlsafe(12) + "\n", mode=0o600)
    password = paths.bmc_password.read_text().strip()
    if not 8 <= len(password) <= 20:
        raise InputError(
            f"{paths.bmc_password}: an IPMI 2.0 password has 8 to 20 characters; remove the file "
            "to have a new one generated"
        )
    for n in site.nodes:
        assert n.bmc is not None
        try:
            ok = n.bmc.password.resolve(site.base_dir) == password
        except InputError:
            ok = False
        if not ok:
            raise InputError(
                f"{site.source}: nodes ({n.name}).bmc.password: must reference the lab's generated password "
                f"file {paths.bmc_password.resolve()} (as file:<path relative to the inventory>)"
            )
    return password


def _preflight() -> None:
    if os.geteuid() != 0:
        raise OperationError("the lab needs root (network namespaces, taps)")
    for tool in ("ip", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            raise OperationError(f"{tool} is not installed; run scripts/setup.sh")


def up(
    site: Site, lab_dir: Path | None = None, timeout: float = 90.0, faults: dict[str, float] | None = None
) -> dict[str, Any]:
    """Create the lab for ``site``; idempotent for a lab that is already up.

    ``faults`` (FaultSpec fields: error_rate, noop_rate, timeout_rate, seed) makes the
    emulated BMCs fail, lie and hang like real ones, to rehearse a run against them."""
    _preflight()
    paths = LabPaths(Path(lab_dir or lab_dir_default()).resolve())
    lp = plan(site, paths)
    ensure_password(site, paths)
    current = read_state(paths)
    if current and netns.exists(lp.namespace) and _alive(current.get("daemon_pid")):
        return current
    if netns.exists(lp.namespace):
        netns.destroy(lp.namespace)  # leftovers of a crashed run
    from .image import build

    image = build(link=paths.image)
    # The lab's "Image Factory": the stand-in image becomes the site's Talos assets, re-pinned
    # deliberately because the image is rebuilt whenever the stand-in changes.
    from ..netboot import assets

    assets.import_files(
        site, image.directory / "vmlinuz", image.directory / "initramfs.zst", update_lock=True
    )
    started = time.monotonic()
    net = netns.LabNetwork(
        lp.namespace, BRIDGE, lp.address, site.networks.management.mtu if site.networks else 1500
    )
    routed = {seg.rack: seg for seg in lp.segments}
    try:
        net.create()
        segments.up(site, lp.segments, lp.namespace, BRIDGE, paths.root)
        for n in lp.nodes:
            if n.segment is not None:
                segments.add_tap(routed[n.segment], n.vm.tap, net.mtu)
            else:
                net.add_tap(n.vm.tap)
            private_dir(n.vm.dir)
            n.vm.save()
        config = {
            "namespace": lp.namespace,
            "address": lp.bmc_address,
            "username": lp.username,
            "vms": str(paths.vms),
            "workdir": str(paths.bmc_workdir),
            "nodes": [
                {"name": n.node, "protocol": n.protocol, "port": n.port, "uefi": n.uefi} for n in lp.nodes
            ],
            "faults": faults or {},
            # The controllers stand-in (controllers.py) starts once `up` writes this file.
            "kubeconfig": str(StateLayout(site.state_dir).kubeconfig.resolve()),
        }
        atomic_write(paths.root / "daemon.json", json.dumps(config, indent=1))
        paths.ready.unlink(missing_ok=True)
        logf = open(paths.daemon_log, "ab")  # noqa: SIM115 - handed to the daemon
        env = {**os.environ, "PROVISIONER_LAB_PASSWORD_FILE": str(paths.bmc_password)}
        daemon = subprocess.Popen(
            netns.exec_argv(
                lp.namespace, [sys.executable, "-m", "provisioner.lab.lab", "serve", str(paths.root)]
            ),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while not paths.ready.exists():
            if daemon.poll() is not None:
                tail = paths.daemon_log.read_text(errors="replace").strip().splitlines()[-5:]
                raise OperationError("lab daemon exited during start-up: " + " | ".join(tail))
            if time.monotonic() > deadline:
                raise OperationError(f"lab daemon not ready within {timeout:.0f}s (see {paths.daemon_log})")
            time.sleep(0.2)
        ready = json.loads(paths.ready.read_text())
        state = {
            "cluster": site.cluster.name,
            "inventory": str(site.source.resolve()),
            "namespace": lp.namespace,
            "bridge": BRIDGE,
            "address": lp.address,
            "daemon_pid": daemon.pid,
            "image": str(image.directory),
            "endpoints": ready["endpoints"],
            "nodes": {
                n.node: {"tap": n.vm.tap, "mac": n.vm.mac, "dir": n.vm.workdir, "segment": n.segment}
                for n in lp.nodes
            },
            "segments": {
                seg.rack: {
                    "router_namespace": seg.router_ns,
                    "boot_namespace": seg.boot_ns,
                    "boot_server": f"{seg.boot_address}:{seg.boot_port}",
                    "block": seg.block,
                    "router": seg.uplink_address,
                }
                for seg in lp.segments
            },
            "started": time.time(),
            "up_seconds": round(time.monotonic() - started, 1),
        }
        atomic_write(paths.state, json.dumps(state, indent=1), mode=0o644)
        return state
    except BaseException:
        with contextlib.suppress(Exception):
            down_namespace(lp.namespace, paths)
        raise


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_state(paths: LabPaths) -> dict[str, Any] | None:
    try:
        data = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def down_namespace(namespace: str, paths: LabPaths) -> dict[str, Any]:
    """Stop the daemon and the VMs, delete the namespace and the disks."""
    state = read_state(paths) or {}
    pid = state.get("daemon_pid")
    if isinstance(pid, int) and _alive(pid) and state.get("namespace") == namespace:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
    killed = netns.kill_all(namespace) if netns.exists(namespace) else []
    removed = segments.down(namespace)
    netns.destroy(namespace)
    for d in (paths.vms, paths.bmc_workdir):
        shutil.rmtree(d, ignore_errors=True)
    for f in (paths.state, paths.ready, paths.root / "daemon.json"):
        f.unlink(missing_ok=True)
    return {"namespace": namespace, "killed": sorted(killed), "segments": removed, "removed": True}


def down(site: Site | None, lab_dir: Path | None = None) -> dict[str, Any]:
    paths = LabPaths(Path(lab_dir or lab_dir_default()).resolve())
    state = read_state(paths)
    if site is not None:
        ns = netns.namespace_name(site.cluster.name)
    elif state:
        ns = state["namespace"]
    else:
        raise InputError("no lab state found; name the inventory (--inventory) whose lab to remove")
    result = down_namespace(ns, paths)
    if site is not None:
        # The VMs and their disks are gone: the tool's records of them ("cp1 ready", "cluster
        # formed") would make the next `up` on a new lab skip everything.
        result["forgotten"] = forget_nodes(site, [n.name for n in site.nodes], "lab down removed its VM")
    return result


def status(site: Site, lab_dir: Path | None = None) -> dict[str, Any]:
    paths = LabPaths(Path(lab_dir or lab_dir_default()).resolve())
    ns = netns.namespace_name(site.cluster.name)
    state = read_state(paths) or {}
    up_ = netns.exists(ns) and _alive(state.get("daemon_pid"))
    nodes = []
    for n in site.nodes:
        vmdir = paths.vms / n.name
        info: dict[str, Any] = {"name": n.name, "powered": False, "pid": None, "boot": None}
        with contextlib.suppress(OSError, ValueError):
            st = json.loads((vmdir / "status.json").read_text())
            info["boot"] = st.get("boot")
        with contextlib.suppress(OSError, ValueError):
            pid = int((vmdir / "qemu.pid").read_text())
            info["pid"], info["powered"] = pid, _alive(pid)
        ep = state.get("endpoints", {}).get(n.name)
        info["bmc"] = f"{ep['protocol']}://{ep['address']}:{ep['port']}" if ep else None
        info["console"] = str(vmdir / "console.log")
        nodes.append(info)
    return {
        "namespace": ns,
        "up": up_,
        "daemon_pid": state.get("daemon_pid") if up_ else None,
        "image": state.get("image"),
        "nodes": nodes,
    }


def serve(root: Path) -> int:
    """The lab daemon (runs inside the namespace): the BMC fleet with QEMU machines."""
    from .bmc_fleet import BmcFleet, FleetSpec, IpmiBmcSpec, RedfishServiceSpec
    from .faults import FaultSpec
    from .machine import BootSetting, MachineSpec
    from .qemu import machine_from_spec

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s lab-daemon %(levelname)s %(name)s: %(message)s"
    )
    paths = LabPaths(root)
    config = json.loads((root / "daemon.json").read_text())
    password = paths.bmc_password.read_text().strip()
    specs: dict[str, MachineSpec] = {}
    for n in config["nodes"]:
        vm = QemuSpec.load(Path(config["vms"]) / n["name"] / "vm.json")
        specs[n["name"]] = MachineSpec(
            name=vm.name,
            uuid=vm.uuid,
            serial=vm.serial,
            macs=(vm.mac,),
            vendor="Provisioner Lab",
            model="QEMU stand-in node",
            boot=BootSetting(device="disk", persistent=True, uefi=bool(n.get("uefi", False))),
        )
    ipmi = tuple(IpmiBmcSpec(specs[n["name"]], n["port"]) for n in config["nodes"] if n["protocol"] == "ipmi")
    by_port: dict[int, list[MachineSpec]] = {}
    for n in config["nodes"]:
        if n["protocol"] == "redfish":
            by_port.setdefault(n["port"], []).append(specs[n["name"]])
    redfish = tuple(RedfishServiceSpec(tuple(ms), port) for port, ms in by_port.items())
    fleet = BmcFleet(
        FleetSpec(
            workdir=Path(config["workdir"]),
            username=config["username"],
            password=password,
            address=config["address"],
            ipmi=ipmi,
            redfish=redfish,
            tls=True,
            machine_factory=functools.partial(machine_from_spec, config["vms"]),
            faults=FaultSpec(**config.get("faults", {})),
        )
    )
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    fleet.start()
    controllers = None
    if config.get("kubeconfig"):
        from .controllers import ControllersStandin

        controllers = ControllersStandin(Path(config["kubeconfig"]), root / "controllers.log")
        controllers.start()
    try:
        if fleet.ca_file is not None:
            atomic_write(paths.redfish_ca, fleet.ca_file.read_bytes(), mode=0o644)
        endpoints = {
            name: {"protocol": e.protocol, "address": e.address, "port": e.port}
            for name, e in fleet.endpoints.items()
        }
        atomic_write(paths.ready, json.dumps({"endpoints": endpoints, "pid": os.getpid()}), mode=0o644)
        log.info("lab BMC fleet ready: %s", endpoints)
        while not stopping:
            time.sleep(0.5)
    finally:
        if controllers is not None:
            controllers.stop()
        fleet.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2])))
    print("usage: python -m provisioner.lab.lab serve LAB_DIR", file=sys.stderr)
    sys.exit(2)
