"""Never start a second site by accident: the guard before new cluster secrets.

The state directory is anchored to the inventory (``Site.state_dir``). Earlier versions took
a relative ``cluster.state_dir`` (and the default ``state/<cluster>``) from the working
directory instead, so an existing site may have its secrets there. Generating new secrets
in the anchored place would give the cluster a new CA: every installed node would look
blank and be reinstalled. So when the anchored directory has no secrets but the place an
older run would have used does, the run stops (exit 2) and names both directories.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError
from .inventory.model import Site
from .layout import StateLayout


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
