"""What the netboot HTTP server answers: iPXE scripts, machine configs, Talos assets.

Identity comes from what iPXE/Talos put in the query (MAC, SMBIOS UUID) and, for machine
configs, from the source address: a config is secret material (it holds the cluster's
keys), so it is served only under URL delivery (apply delivery pushes it over the Talos
API; ``/config`` then answers 403), only to the node's own reserved address, and never
again once the node is recorded installed (or when its record cannot be read). Every
decision is written to the event log, which ``up`` waits on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from ..events import ASSET_DOWNLOAD, CONFIG_DENIED, CONFIG_FETCH, IPXE_SCRIPT, IPXE_UNKNOWN, EventLog
from ..inventory.model import ConfigDelivery, Node, Site
from ..layout import StateLayout
from ..records import MalformedState
from ..state import StateStore
from . import ipxe
from .http import Reply, Request, safe_join
from .rules import config_requester, identify, normalise_mac, normalise_uuid

IPXE_TYPE = "text/plain; charset=utf-8"
YAML_TYPE = "application/yaml"


def _node_ip(node: Node) -> str:
    return str(node.ip)


def _node_uuid(node: Node) -> str | None:
    return node.uuid


class NetbootRoutes:
    """The request handler; ``update`` swaps in a reloaded site atomically."""

    def __init__(
        self,
        site: Site,
        store: StateStore,
        events: EventLog,
        assets_dir: Path,
        nodes: Sequence[Node] | None = None,
        configs_dir: Path | None = None,
        endpoint: ipxe.Endpoint | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self._lock = threading.Lock()
        self.update(site, nodes, assets_dir, configs_dir, endpoint)

    def update(
        self,
        site: Site,
        nodes: Sequence[Node] | None = None,
        assets_dir: Path | None = None,
        configs_dir: Path | None = None,
        endpoint: ipxe.Endpoint | None = None,
    ) -> None:
        with self._lock:
            self.site = site
            self.selected = {n.name for n in (site.nodes if nodes is None else nodes)}
            self.by_mac = {n.boot.mac: n for n in site.nodes}
            self.by_uuid = {n.uuid: n for n in site.nodes if n.uuid}
            self.by_ip = {str(n.ip): n for n in site.nodes}
            if assets_dir is not None:
                self.assets_dir = assets_dir
            self.configs_dir = configs_dir or StateLayout(site.state_dir).configs_dir
            self.endpoint = endpoint or ipxe.Endpoint.for_site(site)

    def __call__(self, req: Request) -> Reply:
        if req.path == "/boot.ipxe":
            return Reply.text(200, ipxe.boot_script(self.endpoint), IPXE_TYPE)
        if req.path == "/node.ipxe":
            return self.node_script(req)
        if req.path == "/config":
            return self.config(req)
        if req.path.startswith("/assets/"):
            return self.asset(req)
        return Reply.text(404, "not found\n")

    # --- iPXE -------------------------------------------------------------------------
    def identify(self, mac: str | None, uuid: str | None) -> Node | None:
        """By boot MAC first (it is what DHCP reserved), then by SMBIOS UUID (``rules``)."""
        return identify(self.by_mac, self.by_uuid, mac, uuid)

    def node_script(self, req: Request) -> Reply:
        mac = normalise_mac(req.query.get("mac", ""))
        uuid = normalise_uuid(req.query.get("uuid", ""))
        serial = req.query.get("serial") or None
        node = self.identify(mac, uuid)
        ident = {
            "mac": mac or req.query.get("mac"),
            "uuid": uuid or req.query.get("uuid"),
            "serial": serial,
            "ip": req.client_ip,
        }
        if node is None:
            self.events.append(IPXE_UNKNOWN, None, "unknown", **ident)
            return Reply.text(404, f"unknown machine mac={ident['mac']} uuid={ident['uuid']}\n")
        if node.name not in self.selected:
            self.events.append(IPXE_SCRIPT, node.name, "local-disk", reason="not selected", **ident)
            return Reply.text(200, ipxe.local_disk_script(node), IPXE_TYPE)
        try:
            installed = self.store.is_installed(node.name)
        except MalformedState as exc:  # never reinstall on a guess: boot what is on the disk
            self.events.append(
                IPXE_SCRIPT, node.name, "local-disk", reason=f"node record unreadable: {exc.problem}", **ident
            )
            return Reply.text(200, ipxe.local_disk_script(node), IPXE_TYPE)
        if installed:
            self.events.append(IPXE_SCRIPT, node.name, "local-disk", reason="installed", **ident)
            return Reply.text(200, ipxe.local_disk_script(node), IPXE_TYPE)
        missing = [f for f in (ipxe.KERNEL, ipxe.INITRAMFS) if not (self.assets_dir / f).is_file()]
        if missing:
            self.events.append(
                IPXE_SCRIPT, node.name, "error", reason=f"assets missing: {', '.join(missing)}", **ident
            )
            return Reply.text(503, f"Talos assets missing on the server: {', '.join(missing)}\n")
        self.events.append(IPXE_SCRIPT, node.name, "install", **ident)
        return Reply.text(200, ipxe.install_script(self.site, node, self.endpoint), IPXE_TYPE)

    # --- machine configs --------------------------------------------------------------
    def config(self, req: Request) -> Reply:
        uuid = normalise_uuid(req.query.get("uuid", ""))
        ident = {"uuid": uuid or req.query.get("uuid"), "ip": req.client_ip}
        if self.site.cluster.talos.config_delivery is not ConfigDelivery.URL:
            # Apply delivery pushes configs over the Talos API: nothing is served over HTTP.
            known = self.by_ip.get(req.client_ip)
            self.events.append(
                CONFIG_DENIED, known.name if known else None, "denied",
                reason="config delivery is apply: configs are never served over HTTP", **ident,
            )
            return Reply.text(403, "forbidden: config delivery is apply\n")
        node, denied = config_requester(
            self.by_uuid, self.by_ip, uuid, req.client_ip, _node_ip, _node_uuid
        )
        if denied is not None or node is None:
            name = node.name if node is not None else None
            self.events.append(CONFIG_DENIED, name, "denied" if node else "unknown", reason=denied, **ident)
            return Reply.text(403, "forbidden\n")
        try:
            installed = self.store.is_installed(node.name)
        except MalformedState as exc:  # unknown progress is never "not installed": no config
            self.events.append(
                CONFIG_DENIED, node.name, "denied", reason=f"node record unreadable: {exc.problem}", **ident
            )
            return Reply.text(403, "no config: node record unreadable\n")
        if node.name not in self.selected or installed:
            why = "installed" if installed else "not selected"
            self.events.append(CONFIG_DENIED, node.name, "denied", reason=why, **ident)
            return Reply.text(403, f"no config: node is {why}\n")
        path = self.configs_dir / f"{node.name}.yaml"
        try:
            data = path.read_bytes()  # at request time: configs may be regenerated while we run
        except FileNotFoundError:
            self.events.append(CONFIG_FETCH, node.name, "missing", reason=f"{path} does not exist", **ident)
            return Reply.text(404, "no machine config generated for this node yet\n")
        if req.method == "GET":
            self.events.append(CONFIG_FETCH, node.name, "ok", bytes=len(data), **ident)
        return Reply(200, data, YAML_TYPE, {"Cache-Control": "no-store"})

    # --- assets -----------------------------------------------------------------------
    def asset(self, req: Request) -> Reply:
        path = safe_join(self.assets_dir, req.path.removeprefix("/assets/"))
        if path is None:
            return Reply.text(404, "not found\n")
        if req.method == "GET" and "range" not in req.headers:
            node = self.by_ip.get(req.client_ip)
            self.events.append(
                ASSET_DOWNLOAD, node.name if node else None, "served", file=path.name, ip=req.client_ip
            )
        return Reply(file=path, content_type="application/octet-stream")
