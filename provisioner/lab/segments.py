"""Routed rack segments: a lab rack with a boot server sits behind a router namespace.

A rack whose ``boot_server`` is set gets what such a rack has in a data center:

- its own L2 segment, a bridge inside a **router namespace** (``pvlab-<cluster>.<rack>-rt``)
  joined to the lab bridge by a veth. The rack keeps the site's one management subnet; the
  router routes the rack's address block (the smallest CIDR holding its nodes and boot
  server) to the segment and answers ARP across (proxy ARP), so unicast is routed both ways
  while broadcasts (DHCP, PXE) never leave the segment: the provisioner host has no L2 there;
- a **site DHCP server** on the segment (a dnsmasq of its own in the router namespace) that
  hands the rack's nodes their reserved addresses and the gateway, and no boot options;
- a **boot server** namespace (``pvlab-<cluster>.<rack>-bs``) on the segment running a real
  ``sshd`` with a host key and a client key generated once per lab directory. Its root's
  home is a lab directory (bind-mounted over ``/root`` in a private mount namespace), so
  what a push uploads never lands in the host's ``/root``. ``python3`` and ``dnsmasq`` are
  the host's, as the boot server's packages.

Every name starts with the lab namespace's name plus ``.``, which is how ``lab down``
finds and removes the segments even when the state files are lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import netaddr

from ..errors import InputError, OperationError
from ..fsutil import atomic_write, private_dir
from ..inventory.model import Site
from . import netns

ROUTER_UPLINK = "up0"  # the router's leg on the lab bridge (inside the router namespace)
SEGMENT_BRIDGE = "rbr0"  # the rack's bridge (inside the router namespace)
ROUTER_BOOT_LEG = "bs0"  # the boot server's veth, router side
BOOT_IF = "eth0"  # the boot server's interface
SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class DhcpHost:
    mac: str
    ip: str
    name: str


@dataclass(frozen=True)
class SegmentPlan:
    """One routed rack: namespaces, addresses and the site DHCP reservations."""

    rack: str
    router_ns: str
    boot_ns: str
    prefixlen: int
    block: str  # CIDR routed to the segment
    uplink_address: str  # the router on the lab bridge
    segment_address: str  # the router (and site DHCP server) on the segment
    boot_address: str
    boot_port: int
    gateway: str
    dns: tuple[str, ...]
    hosts: tuple[DhcpHost, ...]
    uplink_if: str  # the veth end on the lab bridge, inside the lab namespace

    def dir(self, root: Path) -> Path:
        return root / "segments" / self.rack


def segment_prefix(cluster: str) -> str:
    """Every segment namespace of a lab starts with this."""
    return netns.namespace_name(cluster) + "."


def plan_segments(site: Site) -> tuple[SegmentPlan, ...]:
    """A segment per rack with a boot server; errors name the inventory field at fault."""
    if site.networks is None:
        return ()
    mgmt = site.networks.management
    subnet = mgmt.subnet
    src = site.source
    used = {str(mgmt.gateway)}
    if mgmt.vip is not None:
        used.add(str(mgmt.vip))
    if site.networks.netboot is not None:
        used.add(str(site.networks.netboot.server))
    plans: list[SegmentPlan] = []
    spare = netaddr.IPAddress(subnet.last - 1)  # uplink addresses are taken from the top of the subnet down
    for r_index, rack in enumerate(site.racks):
        if rack.boot_server is None:
            continue
        where = f"{src}: racks[{r_index}] ({rack.name}).boot_server.host"
        try:
            boot = netaddr.IPAddress(rack.boot_server.host)
        except (netaddr.AddrFormatError, ValueError):
            raise InputError(
                f"{where}: {rack.boot_server.host!r}; in the lab it must be an IP address"
            ) from None
        if boot not in subnet:
            raise InputError(f"{where}: {boot} is outside the management subnet {subnet}")
        members = [n for n in site.nodes if n.rack == rack.name]
        if not members:
            raise InputError(f"{src}: racks[{r_index}] ({rack.name}): a routed lab rack needs nodes")
        block = netaddr.spanning_cidr([boot, *(n.ip for n in members)])
        if block.prefixlen <= subnet.prefixlen:
            raise InputError(
                f"{src}: racks[{r_index}] ({rack.name}): its nodes and boot server span {block}, the whole "
                f"management subnet; give the rack's addresses a block of their own (e.g. the top quarter)"
            )
        inside = {str(n.ip): n.name for n in site.nodes if n.rack != rack.name and n.ip in block}
        inside.update({a: "a site address (gateway, VIP or netboot server)" for a in used if a in block})
        pool = site.networks.metallb.range if site.networks.metallb is not None else None
        if pool is not None and pool.first <= block.last and block.first <= pool.last:
            inside[f"{pool[0]}-{pool[-1]}"] = "the MetalLB range"
        if inside:
            what = ", ".join(f"{a} ({n})" for a, n in sorted(inside.items()))
            raise InputError(
                f"{src}: racks[{r_index}] ({rack.name}): the rack's address block {block} also holds {what}; "
                "a routed rack needs a block of its own"
            )
        taken = {boot, *(n.ip for n in members)}
        segment_address = next((a for a in block.iter_hosts() if a not in taken), None)
        while spare in block or str(spare) in used or any(spare == n.ip for n in site.nodes):
            spare -= 1
        if segment_address is None or int(spare) <= subnet.first:
            raise InputError(f"{src}: racks[{r_index}] ({rack.name}): no free address for the lab router")
        used.add(str(spare))
        plans.append(
            SegmentPlan(
                rack=rack.name,
                router_ns=f"{segment_prefix(site.cluster.name)}{rack.name}-rt",
                boot_ns=f"{segment_prefix(site.cluster.name)}{rack.name}-bs",
                prefixlen=subnet.prefixlen,
                block=str(block),
                uplink_address=str(spare),
                segment_address=str(segment_address),
                boot_address=str(boot),
                boot_port=rack.boot_server.port,
                gateway=str(mgmt.gateway),
                dns=tuple(str(d) for d in mgmt.dns),
                hosts=tuple(DhcpHost(str(n.boot.mac), str(n.ip), n.name) for n in members),
                uplink_if=netns.ifname("u", rack.name),
            )
        )
        spare -= 1
    return tuple(plans)


def _ip(ns: str, *args: str) -> None:
    res = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise OperationError(f"lab segment: ip -n {ns} {' '.join(args)}: {res.stderr.strip()}")


def _sysctl(ns: str, *settings: str) -> None:
    res = subprocess.run(
        netns.exec_argv(ns, ["sysctl", "-q", "-w", *settings]), capture_output=True, text=True
    )
    if res.returncode != 0:
        raise OperationError(f"lab segment: sysctl in {ns}: {res.stderr.strip()}")


def create_network(seg: SegmentPlan, lab_ns: str, lab_bridge: str, mtu: int) -> None:
    """Router namespace with the rack bridge, the boot-server namespace, veths and routes."""
    for ns in (seg.router_ns, seg.boot_ns):
        if not netns.exists(ns):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        _ip(ns, "link", "set", "lo", "up")
    r, b = seg.router_ns, seg.boot_ns
    _ip(lab_ns, "link", "add", seg.uplink_if, "mtu", str(mtu), "type", "veth", "peer", "name", ROUTER_UPLINK,
        "netns", r)  # fmt: skip
    _ip(lab_ns, "link", "set", seg.uplink_if, "master", lab_bridge)
    _ip(lab_ns, "link", "set", seg.uplink_if, "up")
    _ip(r, "addr", "add", f"{seg.uplink_address}/{seg.prefixlen}", "dev", ROUTER_UPLINK)
    _ip(r, "link", "set", ROUTER_UPLINK, "up")
    _ip(r, "link", "add", SEGMENT_BRIDGE, "mtu", str(mtu), "type", "bridge", "stp_state", "0",
        "forward_delay", "0")  # fmt: skip
    # The segment address carries the subnet's mask (DHCP serves the subnet) but no route: the
    # router sends only the rack's block to the segment, the rest of the subnet up the uplink.
    _ip(r, "addr", "add", f"{seg.segment_address}/{seg.prefixlen}", "dev", SEGMENT_BRIDGE, "noprefixroute")
    _ip(r, "link", "set", SEGMENT_BRIDGE, "up")
    _ip(r, "route", "add", seg.block, "dev", SEGMENT_BRIDGE, "src", seg.segment_address)
    _sysctl(
        r,
        "net.ipv4.ip_forward=1",
        f"net.ipv4.conf.{ROUTER_UPLINK}.proxy_arp=1",
        f"net.ipv4.conf.{SEGMENT_BRIDGE}.proxy_arp=1",
        "net.ipv4.conf.all.rp_filter=0",
    )
    _ip(r, "link", "add", ROUTER_BOOT_LEG, "mtu", str(mtu), "type", "veth", "peer", "name", BOOT_IF,
        "netns", b)  # fmt: skip
    _ip(r, "link", "set", ROUTER_BOOT_LEG, "master", SEGMENT_BRIDGE)
    _ip(r, "link", "set", ROUTER_BOOT_LEG, "up")
    _ip(b, "addr", "add", f"{seg.boot_address}/{seg.prefixlen}", "dev", BOOT_IF)
    _ip(b, "link", "set", BOOT_IF, "up")
    _ip(b, "route", "add", "default", "via", seg.gateway)


def add_tap(seg: SegmentPlan, tap: str, mtu: int) -> None:
    """A VM's tap on the rack's segment (QEMU for that VM runs in the router namespace)."""
    net = netns.LabNetwork(seg.router_ns, SEGMENT_BRIDGE, f"{seg.segment_address}/{seg.prefixlen}", mtu)
    net.add_tap(tap)


# --- the site DHCP server -------------------------------------------------------------------
def dhcp_conf(seg: SegmentPlan, run: Path) -> str:
    """The site's own DHCP server for the segment: reserved addresses, router, DNS; no boot
    options (those come from the boot server's proxy-DHCP)."""
    mask = str(netaddr.IPNetwork(f"{seg.segment_address}/{seg.prefixlen}").netmask)
    network = str(netaddr.IPNetwork(f"{seg.segment_address}/{seg.prefixlen}").network)
    lines = [
        "# lab site DHCP server for rack " + seg.rack + " (addresses only; written by `provisioner lab up`)",
        "port=0",
        f"interface={SEGMENT_BRIDGE}",
        "bind-interfaces",
        "dhcp-authoritative",
        f"dhcp-range={network},static,{mask},1h",
        f"dhcp-option=option:router,{seg.gateway}",
        f"dhcp-leasefile={run / 'site-dhcp.leases'}",
        f"pid-file={run / 'site-dhcp.pid'}",
        f"log-facility={run / 'site-dhcp.log'}",
        "log-dhcp",
    ]
    if seg.dns:
        lines.append("dhcp-option=option:dns-server," + ",".join(seg.dns))
    lines += [f"dhcp-host={h.mac},{h.ip},{h.name}" for h in seg.hosts]
    return "\n".join(lines) + "\n"


def start_site_dhcp(seg: SegmentPlan, root: Path) -> None:
    run = seg.dir(root)
    conf = run / "site-dhcp.conf"
    atomic_write(conf, dhcp_conf(seg, run), mode=0o644)
    res = subprocess.run(
        netns.exec_argv(seg.router_ns, ["dnsmasq", f"--conf-file={conf}"]), capture_output=True, text=True
    )
    if res.returncode != 0:
        raise OperationError(f"lab segment {seg.rack}: site DHCP server did not start: {res.stderr.strip()}")


# --- the boot server ------------------------------------------------------------------------
def client_key(root: Path) -> Path:
    """The lab's SSH client key for its boot servers (the inventory's ``boot_server.key``)."""
    return root / "bootserver-key"


def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        return
    res = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise OperationError(f"ssh-keygen {path}: {res.stderr.strip()}")
    os.chmod(path, 0o600)


def sshd_conf(seg: SegmentPlan, run: Path, home: Path) -> str:
    return "\n".join(
        [
            f"# lab boot server of rack {seg.rack} (written by `provisioner lab up`)",
            f"ListenAddress {seg.boot_address}",
            f"Port {seg.boot_port}",
            f"HostKey {run / 'ssh_host_ed25519_key'}",
            f"PidFile {run / 'sshd.pid'}",
            f"AuthorizedKeysFile {home / '.ssh' / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            # The key file lives in the lab's own 0700 directories, but its path may pass through a
            # world-writable /tmp (a checkout under /tmp), which StrictModes refuses outright.
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def start_boot_server(seg: SegmentPlan, root: Path, timeout: float = 20.0) -> str:
    """Start sshd in the boot-server namespace; returns its host key line (``type base64``)."""
    if shutil.which("ssh-keygen") is None or not Path(SSHD).is_file():
        raise OperationError("openssh-server is not installed; run scripts/setup.sh")
    run = seg.dir(root)
    home = run / "home"
    private_dir(home)
    private_dir(home / ".ssh")
    _keygen(client_key(root), "provisioner-lab")
    _keygen(run / "ssh_host_ed25519_key", f"pvlab-boot-{seg.rack}")
    pub = client_key(root).with_suffix(".pub").read_text().strip()
    atomic_write(home / ".ssh" / "authorized_keys", pub + "\n", mode=0o600)
    conf = run / "sshd_config"
    atomic_write(conf, sshd_conf(seg, run, home), mode=0o644)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    log = open(run / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
    inner = f"mount --bind {home} /root && exec {SSHD} -D -e -f {conf}"
    subprocess.Popen(
        netns.exec_argv(seg.boot_ns, ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while not _listening(seg):
        if time.monotonic() > deadline:
            tail = (run / "sshd.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise OperationError(f"lab boot server {seg.rack}: sshd not listening: {' | '.join(tail)}")
        time.sleep(0.2)
    return " ".join((run / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def _listening(seg: SegmentPlan) -> bool:
    res = subprocess.run(
        netns.exec_argv(seg.boot_ns, ["ss", "-Hltn", f"sport = :{seg.boot_port}"]),
        capture_output=True,
        text=True,
    )
    return bool(res.stdout.strip())


def record_host_key(known_hosts: Path, seg: SegmentPlan, key: str) -> None:
    """Put the boot server's key into the inventory's ``known_hosts`` (replacing an older one
    for the same address): the lab vouches for its own server, as an operator would after
    checking the key on the console."""
    entry = seg.boot_address if seg.boot_port == 22 else f"[{seg.boot_address}]:{seg.boot_port}"
    lines: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        lines = [ln for ln in known_hosts.read_text().splitlines() if ln.split(" ", 1)[0] != entry]
    lines.append(f"{entry} {key}")
    atomic_write(known_hosts, "\n".join(lines) + "\n", mode=0o644)


def up(site: Site, segments: tuple[SegmentPlan, ...], lab_ns: str, lab_bridge: str, root: Path) -> None:
    """Bring every routed segment up: network, site DHCP, boot server, its host key recorded."""
    mtu = site.networks.management.mtu if site.networks else 1500
    for seg in segments:
        private_dir(seg.dir(root))
        create_network(seg, lab_ns, lab_bridge, mtu)
        start_site_dhcp(seg, root)
        key = start_boot_server(seg, root)
        record_host_key(site.base_dir / "known_hosts", seg, key)


def down(lab_ns: str) -> list[str]:
    """Delete every segment namespace of the lab (and what runs in it); returns their names."""
    gone = [ns for ns in netns.namespaces() if ns.startswith(lab_ns + ".")]
    for ns in gone:
        netns.destroy(ns)
    return gone
