"""The network boot service: dnsmasq + the HTTP server, started, reloaded and stopped together.

Python API used by ``up``::

    with NetbootService(site, StateStore(site.state_dir), EventLog(...), nodes=pending):
        ...  # nodes PXE-boot, fetch their scripts and configs; events land in the log

``nodes`` is the selection being provisioned: every node of the site keeps its DHCP
reservation (an installed node must keep its address), but only selected, not-installed
nodes are offered the installer; the others are told to boot from their disk.
``run_foreground`` is ``provisioner netboot serve``: signals, inventory reloads, clean exit.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from ..errors import InputError, OperationError, ProvisionerError
from ..events import EventLog
from ..fsutil import private_dir
from ..inventory.model import DHCPMode, Node, Site
from ..layout import StateLayout
from ..state import StateStore
from . import dnsmasq
from .assets import asset_set
from .http import HTTPServer
from .ipxe import Endpoint
from .proxylog import ProxyLogFollower
from .routes import NetbootRoutes

log = logging.getLogger(__name__)


class NetbootService:
    def __init__(
        self,
        site: Site,
        state_store: StateStore,
        event_log: EventLog,
        nodes: Sequence[Node] | None = None,
        *,
        assets_root: Path | None = None,
        runtime_dir: Path | None = None,
        http_host: str | None = None,
        http_port: int | None = None,
        dhcp: bool = True,
        dnsmasq_prefix: Sequence[str] = (),
    ) -> None:
        if site.networks is None or site.networks.netboot is None:
            raise InputError("networks.netboot.server is required to run the network boot service")
        self.site = site
        self.store = state_store
        self.events = event_log
        self.nodes = list(site.nodes if nodes is None else nodes)
        self.assets_root = assets_root
        self.runtime_dir = runtime_dir or StateLayout(site.state_dir).netboot_dir
        self.dhcp = dhcp
        nb = site.networks.netboot
        self._http_host = http_host or str(nb.server)
        self._http_port = nb.http_port if http_port is None else http_port
        self._paths = dnsmasq.Paths(self.runtime_dir)
        self._dnsmasq = dnsmasq.Dnsmasq(self._paths, dnsmasq_prefix)
        self._routes: NetbootRoutes | None = None
        self._http: HTTPServer | None = None
        self._conf_text: str | None = None
        self._lock = threading.Lock()
        self._proxy_stop = threading.Event()
        self._proxy_thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def http_address(self) -> tuple[str, int]:
        if self._http is None:
            raise RuntimeError("the service is not started")
        return self._http.address

    @property
    def dnsmasq_paths(self) -> dnsmasq.Paths:
        return self._paths

    def _endpoint(self, site: Site) -> Endpoint:
        """What nodes are told: the configured server address and port (port 0 in tests
        means "pick one", in which case the bound port is advertised)."""
        base = Endpoint.for_site(site)
        if self._http is not None and self._http_port == 0:
            return Endpoint(base.host, self._http.address[1])
        return base

    def _interface(self, site: Site) -> str | None:
        assert site.networks is not None and site.networks.netboot is not None
        return site.networks.netboot.interface or dnsmasq.interface_holding(str(site.networks.netboot.server))

    def start(self) -> None:
        with self._lock:
            private_dir(self.runtime_dir)
            assets = asset_set(self.site, self.assets_root)
            missing = assets.missing()
            if missing:
                log.warning(
                    "Talos assets missing in %s: %s (nodes cannot install until `provisioner assets "
                    "fetch` or `assets import`)",
                    assets.directory,
                    ", ".join(missing),
                )
            self._routes = NetbootRoutes(self.site, self.store, self.events, assets.directory, self.nodes)
            try:
                self._http = HTTPServer(self._http_host, self._http_port, self._routes)
            except OSError as exc:
                where = f"{self._http_host}:{self._http_port}"
                raise OperationError(f"netboot HTTP cannot listen on {where}: {exc.strerror}") from None
            self._routes.update(self.site, self.nodes, endpoint=self._endpoint(self.site))
            self._http.start()
            try:
                if self.dhcp:
                    self._conf_text = dnsmasq.write_files(
                        self.site, self._paths, self.events.path, interface=self._interface(self.site)
                    )
                    self._dnsmasq.start()
                    self._follow_proxy_answers()
            except BaseException:
                self._http.stop()
                self._http = None
                raise
            log.info(
                "netboot: HTTP on %s:%s, dnsmasq %s",
                *self._http.address,
                f"pid {self._dnsmasq.pid}" if self.dhcp else "disabled",
            )

    def _node_by_mac(self, mac: str) -> str | None:
        return next((n.name for n in self.nodes if n.boot.mac.lower() == mac), None)

    def _follow_proxy_answers(self) -> None:
        """Proxy-DHCP makes no lease, so no lease hook runs: its answers become events from
        dnsmasq's log instead (``proxylog``), polled each second by a daemon thread."""
        mgmt = self.site.networks.management if self.site.networks else None
        if mgmt is None or mgmt.dhcp.mode is not DHCPMode.PROXY or self._proxy_thread is not None:
            return
        follower = ProxyLogFollower(self._paths.log, self.events, self._node_by_mac)

        def run() -> None:
            while not self._proxy_stop.wait(1.0):
                try:
                    follower.poll()
                except OSError as exc:
                    log.warning("netboot: cannot read dnsmasq's log: %s", exc)

        self._proxy_stop.clear()
        self._proxy_thread = threading.Thread(target=run, name="netboot-proxylog", daemon=True)
        self._proxy_thread.start()

    def stop(self) -> None:
        with self._lock:
            self._proxy_stop.set()
            if self._proxy_thread is not None:
                self._proxy_thread.join(timeout=5)
                self._proxy_thread = None
            self._dnsmasq.stop()
            if self._http is not None:
                self._http.stop()
                self._http = None

    def reload(self, site: Site | None = None, nodes: Sequence[Node] | None = None) -> bool:
        """Apply a changed site/selection; restarts dnsmasq only if its config changed
        (a new config is ``--test``-ed first, so a bad one leaves the old one running).
        Returns True if dnsmasq was restarted."""
        with self._lock:
            if site is not None:
                if site.networks is None or site.networks.netboot is None:
                    raise InputError("networks.netboot.server is required to run the network boot service")
                self.site = site
                if nodes is None:
                    nodes = [n for n in site.nodes if n.name in {m.name for m in self.nodes}] or site.nodes
            if nodes is not None:
                self.nodes = list(nodes)
            if self._routes is not None:
                self._routes.update(
                    self.site,
                    self.nodes,
                    asset_set(self.site, self.assets_root).directory,
                    endpoint=self._endpoint(self.site),
                )
            if not self.dhcp or self._http is None:
                return False
            text = dnsmasq.render(self.site, self._paths, interface=self._interface(self.site))
            if text == self._conf_text and self._dnsmasq.running():
                return False
            self._conf_text = dnsmasq.write_files(
                self.site, self._paths, self.events.path, interface=self._interface(self.site)
            )
            self._dnsmasq.restart()
            return True

    def running(self) -> bool:
        return self._http is not None and (not self.dhcp or self._dnsmasq.running())

    def __enter__(self) -> NetbootService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector for an inventory file or directory."""
    files = sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
    out = []
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


def run_foreground(
    service: NetbootService,
    load: Callable[[], tuple[Site, Sequence[Node]]],
    watch: Path | None = None,
    poll: float = 1.0,
    on_ready: Callable[[NetbootService], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; reload on SIGHUP or when ``watch`` changes.

    An inventory that no longer loads is reported and ignored: the service keeps the last
    good configuration rather than going down under the nodes it is booting.
    """
    stop = threading.Event()
    reload_now = threading.Event()

    def on_stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    def on_hup(_sig: int, _frame: FrameType | None) -> None:
        reload_now.set()

    previous = {
        s: signal.signal(s, h)
        for s, h in ((signal.SIGINT, on_stop), (signal.SIGTERM, on_stop), (signal.SIGHUP, on_hup))
    }
    sig = _signature(watch) if watch else ()
    try:
        with service:
            if on_ready:
                on_ready(service)
            while not stop.wait(poll):
                if watch is not None:
                    now = _signature(watch)
                    if now != sig:
                        sig = now
                        reload_now.set()
                if not reload_now.is_set():
                    if service.dhcp and not service.running():
                        log.error("dnsmasq is not running; restarting it")
                        service.reload()
                    continue
                reload_now.clear()
                try:
                    site, nodes = load()
                    restarted = service.reload(site, nodes)
                    log.warning("netboot: inventory reloaded%s", " (dnsmasq restarted)" if restarted else "")
                except ProvisionerError as exc:
                    log.error("netboot: inventory change not applied, keeping the running config: %s", exc)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
