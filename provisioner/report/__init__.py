"""The site report: one self-contained HTML page of racks, node timelines, the platform's
HelmRelease graph and the tenant tree, built from the state directory.

``build_page`` reads the state and renders; ``write_report`` writes the file (the default
is ``StateLayout.report``); ``serve`` keeps the page current on localhost while ``up`` runs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..fsutil import atomic_write, private_dir
from ..layout import StateLayout
from .collect import collect, fingerprint
from .render import page
from .view import SiteView, view_of

__all__ = ["SiteView", "build_page", "view_of", "write_report"]


def build_page(
    view: SiteView, layout: StateLayout, live_poll_ms: int | None = None, notes: list[str] | None = None
) -> str:
    """The page for the state as it is now; problems found on the way (malformed node
    records) are shown in the page and appended to ``notes``."""
    version = fingerprint(layout)
    data = collect(view, layout)
    if notes is not None:
        notes.extend(data.notes)
    return page.render(data, version, live_poll_ms)


def write_report(
    view: SiteView, layout: StateLayout, out: Path | None = None, notes: list[str] | None = None
) -> Path:
    """Write the page to ``out`` (default ``layout.report``); InputError for a bad path."""
    target = Path(out) if out is not None else layout.report
    if target.is_dir():
        raise InputError(f"--out {target}: is a directory; give a file name such as {target / 'report.html'}")
    if not target.parent.is_dir():
        if out is not None:
            raise InputError(f"--out {target}: directory {target.parent} does not exist")
        private_dir(target.parent)  # the state directory: private, as every stage creates it
    html = build_page(view, layout, notes=notes)
    try:
        # The page holds no secrets (see collect.py): readable like any document to mail around.
        atomic_write(target, html, mode=0o644)
    except PermissionError:
        raise InputError(f"--out {target}: permission denied") from None
    return target
