"""What ``netboot push`` uploads to a boot server: the agent, its manifest, configs, dnsmasq files.

A self-contained bundle for one rack, laid out on the boot server like a state directory
(``StateLayout`` is stdlib-only and travels in the agent zip, so both sides name the files
the same way):

- ``manifest.json``: every answer decided here (``/boot.ipxe``, each node's install or
  boot-from-disk script, MAC/UUID/IP), for the rack's nodes only;
- the machine configs of nodes that are to install (secret, 0600);
- ``run/dnsmasq.conf`` + lease hook + MAC map: DHCP reservations for the rack's nodes;
- ``assets/``: Talos kernel and initramfs, uploaded only when the remote sha256 differs;
- ``agent.zip`` + ``netboot.sh``: the stdlib-only agent (``remote_agent``) and its launcher.

Building it touches nothing remote: it is pure data from the site and the state store.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import netaddr

from ..inventory.model import Node, Site
from ..layout import StateLayout
from ..state import StateStore
from . import dnsmasq, ipxe
from .assets import ASSET_FILES, asset_set

LAUNCHER = "netboot.sh"
AGENT_ZIP = "agent.zip"
MIN_PYTHON = (3, 10)
# The boot server's directory, named as on the tool's side: relative paths in the bundle.
REMOTE = StateLayout(Path("."))


def remote_rel(path: Path) -> str:
    """``REMOTE.config("cp1")`` -> ``configs/cp1.yaml`` (a bundle path)."""
    return PurePosixPath(path).as_posix()


_PKG = Path(__file__).resolve().parents[1]
# The agent's whole world: stdlib-only modules, so the boot server needs no PyPI package.
AGENT_MODULES = (
    "__init__.py",
    "events.py",
    "fsutil.py",
    "layout.py",
    "netboot/__init__.py",
    "netboot/childguard.py",
    "netboot/http.py",
    "netboot/leasehook.py",
    "netboot/proxylog.py",
    "netboot/remote_agent.py",
    "netboot/remote_follow.py",
    "netboot/rules.py",
)


# --- the bundle -----------------------------------------------------------------------------
@dataclass
class Bundle:
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # relpath -> data, mode
    large: dict[str, Path] = field(default_factory=dict)  # relpath -> local file (sha256-skipped)
    warnings: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # node -> install | local-disk


def agent_zip() -> bytes:
    """The agent and its modules, byte-identical for identical sources (so re-pushes skip it)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in AGENT_MODULES:
            info = zipfile.ZipInfo(f"provisioner/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (_PKG / rel).read_bytes())
    return buf.getvalue()


def _launcher(cluster: str, rack: str, python: str) -> str:
    return (
        "#!/bin/sh\n"
        f"# provisioner netboot agent for rack {rack} of cluster {cluster}; written by "
        "`provisioner netboot push`.\n"
        "# usage: sh netboot.sh start|stop|status   (prints JSON)\n"
        'here=$(cd "$(dirname "$0")" && pwd) || exit 1\n'
        'PYTHONPATH="$here/agent.zip"\nexport PYTHONPATH\numask 077\n'
        f'exec {shlex.quote(python)} -m provisioner.netboot.remote_agent --dir "$here" "$@"\n'
    )


def _lease_hook(root: str, python: str) -> str:
    env = {
        "PROVISIONER_EVENTS": f"{root}/{remote_rel(REMOTE.events)}",
        "PROVISIONER_NODEMAP": f"{root}/run/nodes.json",
        "PYTHONPATH": f"{root}/{AGENT_ZIP}",
    }
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    return (
        f"#!/bin/sh\n# dnsmasq lease events -> the agent's event log\n{exports}"
        f'exec {shlex.quote(python)} -m provisioner.netboot.leasehook "$@"\n'
    )


def rack_site(site: Site, server: str, http_port: int, interface: str | None, rack: str = "") -> Site:
    """The site as seen from the boot server: its address and port, its interface, and the
    rack's DHCP mode (``racks[].boot_server.dhcp``)."""
    assert site.networks is not None and site.networks.netboot is not None
    nb = site.networks.netboot.model_copy(
        update={"server": netaddr.IPAddress(server), "http_port": http_port, "interface": interface}
    )
    update: dict[str, object] = {"netboot": nb}
    mode = next((r.boot_server.dhcp for r in site.racks if r.name == rack and r.boot_server), None)
    if mode is not None:  # the rack's own DHCP mode (proxy beside the segment's DHCP server)
        mgmt = site.networks.management
        update["management"] = mgmt.model_copy(update={"dhcp": mgmt.dhcp.model_copy(update={"mode": mode})})
    return site.model_copy(update={"networks": site.networks.model_copy(update=update)})


def build_bundle(
    site: Site,
    rack: str,
    selected: list[Node],
    store: StateStore,
    *,
    root: str,
    python: str,
    server: str,
    http_port: int,
    interface: str | None,
    dhcp: bool,
    assets_root: Path | None,
) -> Bundle:
    rsite = rack_site(site, server, http_port, interface, rack)
    endpoint = ipxe.Endpoint(server, http_port)
    rack_nodes = [n for n in site.nodes if n.rack == rack]
    chosen = {n.name for n in selected}
    bundle = Bundle()
    entries = []
    for n in rack_nodes:
        if n.name not in chosen or store.is_installed(n.name):
            reason = "not selected" if n.name not in chosen else "installed"
            answer, script = "local-disk", ipxe.local_disk_script(n)
        else:
            reason, answer, script = "", "install", ipxe.install_script(rsite, n, endpoint)
            cfg = StateLayout(site.state_dir).config(n.name)
            try:
                bundle.files[remote_rel(REMOTE.config(n.name))] = (cfg.read_bytes(), 0o600)
            except FileNotFoundError:
                bundle.warnings.append(
                    f"{n.name}: no machine config in {cfg.parent} (run `provisioner configs generate`)"
                )
        bundle.answers[n.name] = answer
        entries.append(
            {
                "name": n.name,
                "mac": n.boot.mac,
                "uuid": n.uuid,
                "ip": str(n.ip),
                "answer": answer,
                "reason": reason,
                "script": script,
                "disk_script": ipxe.local_disk_script(n),  # once the tool says it is installed
            }
        )
    manifest = {
        "cluster": site.cluster.name,
        "rack": rack,
        "http": {"host": server, "port": http_port},
        "dhcp": dhcp,
        "boot_ipxe": ipxe.boot_script(endpoint),
        "asset_files": list(ASSET_FILES),
        "nodes": entries,
    }
    bundle.files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True).encode(), 0o600)
    bundle.files[LAUNCHER] = (_launcher(site.cluster.name, rack, python).encode(), 0o700)
    if dhcp:
        paths = dnsmasq.Paths(Path(root) / "run")
        conf = dnsmasq.render(rsite, paths, rack_nodes, interface)
        bundle.files["run/dnsmasq.conf"] = (conf.encode(), 0o600)
        bundle.files["run/leasehook.sh"] = (_lease_hook(root, python).encode(), 0o700)
        node_map = {n.boot.mac: n.name for n in rack_nodes}
        bundle.files["run/nodes.json"] = (json.dumps(node_map, indent=1).encode(), 0o600)
    aset = asset_set(site, assets_root)
    for name in ASSET_FILES:
        if aset.path(name).is_file():
            bundle.large[f"assets/{name}"] = aset.path(name)
        else:
            bundle.warnings.append(
                f"Talos asset {aset.path(name)} is missing (`provisioner assets fetch` or `assets import`)"
            )
    return bundle


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
