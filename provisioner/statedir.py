"""Never start a second site by accident: the guard before new cluster secrets.

The state directory is anchored to the inventory (``Site.state_dir``). Earlier versions took
a relative ``cluster.state_dir`` (and the default ``state/<cluster>``) from the working
directory instead, so an existing site may have its secrets there. Generating new secrets
in the anchored place would give the cluster a new CA: every installed node would look
blank and be reinstalled. So when the anchored directory has no secrets but the place an
older run would have used does, the run stops (exit 2) and names both directories.

The same mistake without any directory to find: the state was lost, or the inventory points at
the wrong place. Then the nodes themselves say so: an installed Talos node serves its API with
mutual TLS under the cluster's OS CA (``talosapi/probe.py``), which no secrets in a new state
directory could match. When any inventory node answers that way, the run stops (exit 2) naming
the state directory and those nodes with their certificates' issuer. Unreachable nodes and nodes
in maintenance mode are what a new site looks like, and pass.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import InputError
from .inventory.model import Site
from .layout import StateLayout
from .talosapi.probe import TALOS_API_PORT, ApiAnswer, probe_all

log = logging.getLogger(__name__)
OVERRIDE_FLAG = "--ignore-installed-nodes"  # of `secrets generate`: the one way past the node check


def unanchored_state_dir(site: Site, cwd: Path | None = None) -> Path | None:
    """Where a run from ``cwd`` would have kept this cluster's state before anchoring, if that
    is somewhere else and holds a secrets bundle; else None."""
    raw = Path(site.cluster.state_dir or f"state/{site.cluster.name}").expanduser()
    if raw.is_absolute():
        return None
    legacy = Path(os.path.normpath(((cwd or Path.cwd()) / raw).absolute()))
    if legacy == site.state_dir or not StateLayout(legacy).secrets.is_file():
        return None
    return legacy


def refuse_if_state_elsewhere(site: Site) -> None:
    """Raise ``InputError`` (exit 2) when new secrets would shadow an existing site's."""
    legacy = unanchored_state_dir(site)
    if legacy is None:
        return
    raise InputError(
        f"no cluster secrets in the state directory {site.state_dir} (relative to the inventory), "
        f"but {legacy} holds secrets for cluster {site.cluster.name} (where older versions kept the "
        "state when run from this directory). New secrets would mean a new CA and every installed "
        f"node reinstalled. Move {legacy} to {site.state_dir}, or set cluster.state_dir to "
        f"{legacy}, then rerun; nothing was changed"
    )


def installed_nodes(
    site: Site, port: int = TALOS_API_PORT, timeout: float = 1.5, concurrency: int = 32
) -> list[tuple[str, ApiAnswer]]:
    """The inventory's nodes whose Talos API answers as installed (mutual TLS), with the answer.

    Each probe is bounded by ``timeout`` per network step and ``concurrency`` run at once, so a
    new site of powered-off machines costs a few seconds at most, once (before its secrets exist).
    """
    nodes = [n for n in site.nodes if n.ip is not None]
    answers = probe_all([str(n.ip) for n in nodes], port, timeout, concurrency)
    return [(n.name, a) for n, a in zip(nodes, answers, strict=True) if a.mode == "installed"]


def refuse_if_nodes_installed(site: Site, *, ignore: bool = False, port: int = TALOS_API_PORT) -> None:
    """Raise ``InputError`` (exit 2) when inventory nodes are installed under secrets not here.

    Called only when ``secrets.yaml`` is about to be created. With ``ignore`` (the operator's
    explicit ``secrets generate --ignore-installed-nodes``) the nodes are logged as a warning instead.
    """
    found = installed_nodes(site, port)
    if not found:
        return
    listed = "; ".join(
        f"{name} ({a.endpoint}, certificate issued by {a.issuer or 'unknown'})" for name, a in found
    )
    if ignore:
        log.warning(
            "generating new cluster secrets in %s although these nodes are installed under other secrets "
            "(%s): they can only be reinstalled (%s)",
            site.state_dir,
            listed,
            OVERRIDE_FLAG,
        )
        return
    raise InputError(
        f"no cluster secrets in the state directory {site.state_dir}, but {len(found)} node(s) of the "
        f"inventory answer on the Talos API as installed, with mutual TLS under a CA that is not there: "
        f"{listed}. New secrets would mean a new CA and every installed node reinstalled. If this site's "
        f"state is elsewhere, set cluster.state_dir (relative to {site.base_dir}) to the directory that "
        "holds its secrets.yaml, or import the bundle with `provisioner secrets generate --from "
        "<secrets.yaml>`; if these nodes are really to be reinstalled under new secrets, run "
        f"`provisioner secrets generate {OVERRIDE_FLAG}` once (logged); nothing was changed"
    )
