"""``provisioner`` with a test hook: a real SIGKILL right after a named platform transition is on disk.

Run as ``python platform_crash_child.py <provisioner args>`` by ``test_platform_crash_points.py``;
nothing in the product reads these variables (the hook is installed here, before the product's
modules are imported, so every ``from ..fsutil import atomic_write`` binds the wrapper):

- ``PV_STATE_DIR``: the site's state directory (the persisted files are named through ``StateLayout``);
- ``PV_CRASH_LOG``: append each transition's label to this file as it happens;
- ``PV_CRASH_SKIP``: when set (a comma-separated list, possibly empty), the process kills itself with
  SIGKILL at the first transition not in that list, right after it is on disk (nothing runs after
  it: no ``finally``, no atexit, no flush, exactly as ``kill -9`` from outside at that instant).

A transition is a persisted write while a platform stage (any of ``pipeline.stages.STAGES`` after the
hardware ones) runs, labelled ``<stage>:<what>``:
``applied`` (the API accepted the stage's first apply, which the journal does not know yet),
``journal`` (the first apply recorded in ``StateLayout.platform_journal``),
``record`` (the first write of ``StateLayout.platform_stage(stage)``, e.g. helmreleases' progress)
and ``done`` (the write after which the stage's own ``done(layout)`` holds). One write carries at most
one label, the latest in that order, so no two labels name the same instant.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import provisioner.fsutil as fsutil

_real_atomic_write = fsutil.atomic_write
_current: list[Any] = []  # the platform stage running now (a stack of one)
_fired: set[str] = set()


def _label(path: Path) -> str | None:
    """The transition ``path`` (just written) makes, if it is one not seen before in this process."""
    from provisioner.layout import StateLayout

    if not _current:
        return None
    stage = _current[-1]
    layout = StateLayout(Path(os.environ["PV_STATE_DIR"]))
    candidates = []
    if path == layout.platform_journal:
        candidates.append(f"{stage.name}:journal")
    elif path == layout.platform_stage(stage.name):
        candidates.append(f"{stage.name}:record")
        if stage.done(layout):
            candidates.append(f"{stage.name}:done")
    fresh = [c for c in candidates if c not in _fired]
    _fired.update(candidates)
    return fresh[-1] if fresh else None


def _atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    _real_atomic_write(path, data, mode)
    _reached(_label(Path(path)))


def _reached(label: str | None) -> None:
    """Log ``label``; die here unless an earlier run of the chain died here already."""
    if label is None:
        return
    log = os.environ.get("PV_CRASH_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(label + "\n")
    skip = os.environ.get("PV_CRASH_SKIP")
    if skip is not None and label not in skip.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def _track_applies() -> None:
    """``Applier`` notes an apply in its journal only after the API accepted it: the instant between
    the two is a transition of its own (the object is live, the journal does not say so)."""
    from provisioner.cozystack.apply import Applier

    save = Applier._save

    def noted(self: Applier) -> None:
        if _current:
            label = f"{_current[-1].name}:applied"
            if label not in _fired:
                _fired.add(label)
                _reached(label)
        save(self)

    Applier._save = noted  # type: ignore[method-assign]


def _track(stage: Any) -> None:
    run = stage.run

    async def tracked(ctx: Any) -> None:
        _current.append(stage)
        try:
            await run(ctx)
        finally:
            _current.pop()

    stage.run = tracked


def main(argv: list[str]) -> int:
    fsutil.atomic_write = _atomic_write  # type: ignore[assignment]
    from provisioner.cli import main as cli_main
    from provisioner.pipeline.stages import HARDWARE_STAGES, STAGES

    for stage in STAGES:  # every stage after the hardware ones: the platform's, present and future
        if stage not in HARDWARE_STAGES:
            _track(stage)
    _track_applies()
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
