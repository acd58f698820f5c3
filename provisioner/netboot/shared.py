"""One site netboot service shared by concurrent runs (``make rack-r1 & make rack-r2``).

A site has one DHCP/TFTP/HTTP endpoint, so two runs cannot each start their own: the second
could not bind the port. Instead every run registers in ``netboot/shared.json`` (under
``netboot/shared.lock``) with its pid and the nodes it provisions, and the service runs as a
small daemon (``python -m provisioner.netboot.shared serve``) started by the first run:

- it serves the union of the registered runs' nodes (a later run is served as soon as the
  daemon has reloaded with its nodes: ``served`` in the registry says so);
- a run that leaves, or dies (its pid is gone), drops out of the registry;
- the daemon stops when no run is left, and clears itself from the registry while holding
  the lock, so a run arriving at that moment starts a fresh one on a free port;
- a run may start it early (``warm``: registered with no nodes yet), so that its interpreter,
  imports and inventory load overlap the run's secrets and machine-configs stages: it serves
  nothing, and binds no port, until a run registers nodes.

The daemon runs in the caller's network namespace and dies with nothing: it outlives the
run that started it exactly as long as another run still needs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import OperationError
from ..events import EventLog
from ..fsutil import atomic_write, locked, private_dir
from ..inventory.model import Node, Site
from ..layout import StateLayout
from ..state import StateStore

log = logging.getLogger(__name__)

POLL = 0.1  # the daemon's look at the registry: a read under the lock, a write only on change
IDLE_STOP = 1.0  # seconds with no run registered before the daemon stops
REPO_ROOT = Path(__file__).resolve().parents[2]


def _paths(site: Site) -> tuple[Path, Path, Path]:
    d = StateLayout(site.state_dir).netboot_dir
    private_dir(d)
    return d / "shared.json", d / "shared.lock", d / "shared.log"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _read(path: Path) -> dict[str, Any]:
    try:
        reg = json.loads(path.read_text())
    except (OSError, ValueError):
        reg = {}
    if not isinstance(reg, dict):
        reg = {}
    raw_users = reg.get("users")
    users: dict[str, Any] = raw_users if isinstance(raw_users, dict) else {}
    reg["users"] = {pid: nodes for pid, nodes in users.items() if pid.isdigit() and _alive(int(pid))}
    if not _alive(reg.get("daemon")):
        reg["daemon"], reg["served"] = None, []
    return reg


def _listed(names: list[str], most: int = 8) -> str:
    """A log line's worth of node names: a 1,000-node site's full list was one 9 kB line."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names) - most} more)"


def _write(path: Path, reg: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(reg, sort_keys=True) + "\n", mode=0o600)


class SharedNetboot(contextlib.AbstractContextManager["SharedNetboot"]):
    """This run's membership of the site's shared netboot service."""

    def __init__(self, site: Site, nodes: list[Node], *, timeout: float = 60.0, **options: Any) -> None:
        """``options``: ``NetbootService`` keywords the daemon starts with (``assets_root``,
        ``http_port``, ``dhcp``), as JSON-able values; the first run's options win."""
        self.site, self.nodes, self.timeout = site, nodes, timeout
        self.options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        self.registry, self.lock, self.log = _paths(site)
        self.me = str(os.getpid())
        self.started_daemon = False

    def warm(self) -> None:
        """Register this run with no nodes yet, starting the daemon if none runs: it loads while
        the run does other work, and ``__enter__`` later finds it ready to serve. A run that
        never enters leaves with ``leave`` (or by dying: its pid drops out)."""
        self._register(None)

    def _register(self, names: list[str] | None) -> None:
        """This run in the registry with ``names`` (None: as it is, or with none yet), and a
        daemon started if none runs."""
        with locked(self.lock):
            reg = _read(self.registry)
            if names is None:
                reg["users"].setdefault(self.me, [])
            else:
                reg["users"][self.me] = names
            if reg["daemon"] is None:
                reg["daemon"], reg["served"] = self._spawn(), []
                self.started_daemon = True
            _write(self.registry, reg)

    def __enter__(self) -> SharedNetboot:
        names = sorted(n.name for n in self.nodes)
        self._register(names)
        deadline = time.monotonic() + self.timeout
        while True:
            with locked(self.lock):
                reg = _read(self.registry)
            if reg["daemon"] is None:
                self.leave()
                tail = " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])
                raise OperationError(f"the site's netboot service did not start: {tail} (see {self.log})")
            if set(names) <= set(reg["served"]):
                return self
            if time.monotonic() > deadline:
                self.leave()
                raise OperationError(f"the site's netboot service did not take this run's nodes ({self.log})")
            time.sleep(0.05)

    def _spawn(self) -> int:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the daemon
        argv = [sys.executable, "-m", "provisioner.netboot.shared", "serve", str(self.site.source)]
        argv.append(json.dumps(self.options))
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True, cwd=REPO_ROOT
        )
        logf.close()
        return proc.pid

    def leave(self) -> None:
        with locked(self.lock):
            reg = _read(self.registry)
            reg["users"].pop(self.me, None)
            _write(self.registry, reg)

    def __exit__(self, *exc: object) -> None:
        self.leave()


def serve(inventory: Path, options: dict[str, Any]) -> int:
    """The daemon: serve the union of the registered runs' nodes until no run is left."""
    from ..inventory import load_inventory
    from .service import NetbootService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s shared-netboot %(levelname)s %(message)s")
    site = load_inventory(inventory).site
    registry, lock, _ = _paths(site)
    store = StateStore(site.state_dir)
    if "assets_root" in options and options["assets_root"] is not None:
        options["assets_root"] = Path(options["assets_root"])
    by_name = {n.name: n for n in site.nodes}
    service: NetbootService | None = None
    served: list[str] = []
    empty_since: float | None = None
    seen: dict[str, Any] = {}  # the registry as this daemon last wrote it
    me = os.getpid()
    try:
        while True:
            with locked(lock):
                reg = _read(registry)
                if reg["daemon"] != me:
                    log.info("replaced in the registry; stopping")
                    return 0
                wanted = sorted({n for names in reg["users"].values() for n in names if n in by_name})
                if not reg["users"]:
                    empty_since = empty_since or time.monotonic()
                    if time.monotonic() - empty_since >= IDLE_STOP:
                        if service is not None:
                            service.stop()  # the port is free before the registry says so
                            service = None
                        reg["daemon"], reg["served"] = None, []
                        _write(registry, reg)
                        log.info("no run left; stopped")
                        return 0
                else:
                    empty_since = None
                if wanted and wanted != served:
                    nodes = [by_name[n] for n in wanted]
                    if service is None:
                        service = NetbootService(site, store, EventLog(store.events_path), nodes, **options)
                        service.start()
                    else:
                        service.reload(site, nodes)
                    served = wanted
                    log.info("serving %d nodes: %s", len(served), _listed(served))
                reg["served"] = served
                if reg != seen:  # a write (and its fsync) only on change
                    _write(registry, reg)
                    seen = reg
            time.sleep(POLL)
    except Exception as exc:
        log.error("failed: %s", exc)
        with locked(lock):
            reg = _read(registry)
            if reg.get("daemon") == me:
                reg["daemon"], reg["served"] = None, []
                _write(registry, reg)
        return 1
    finally:
        if service is not None:
            service.stop()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2]), json.loads(sys.argv[3])))
    print("usage: python -m provisioner.netboot.shared serve INVENTORY OPTIONS_JSON", file=sys.stderr)
    sys.exit(2)
