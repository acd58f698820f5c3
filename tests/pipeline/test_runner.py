"""The walk: a stage recorded as done is skipped, unless it says it was done for other inputs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from provisioner.events import EventLog
from provisioner.layout import StateLayout
from provisioner.pipeline.context import RunContext
from provisioner.pipeline.runner import walk
from provisioner.state import StateStore

from .conftest import make_site


class _Progress:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def stage(self, name: str, status: str, message: str = "", level: str = "info") -> None:
        self.lines.append((name, status))


class _Recorded:
    """Done per its flag; ``outdated`` present only when given."""

    def __init__(self, name: str, done: bool, outdated: bool | None = None) -> None:
        self.name, self._done, self.ran = name, done, False
        if outdated is not None:
            self.outdated = lambda site, layout: outdated

    def applies(self, bundle: Any) -> bool:
        return True

    def done(self, layout: StateLayout) -> bool:
        return self._done

    async def run(self, ctx: RunContext) -> None:
        self.ran = True


def test_done_stages_are_skipped_unless_outdated(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    layout = StateLayout(site.state_dir)
    progress = _Progress()
    ctx = RunContext(site, layout, StateStore(site.state_dir), EventLog(layout.events), progress)
    fresh = _Recorded("fresh", done=True, outdated=False)
    changed = _Recorded("changed", done=True, outdated=True)
    plain = _Recorded("plain", done=True)
    todo = _Recorded("todo", done=False)
    assert asyncio.run(walk(ctx, [fresh, changed, plain, todo])) is None
    assert (fresh.ran, changed.ran, plain.ran, todo.ran) == (False, True, False, True)
    assert ctx.stages == {"fresh": "done", "changed": "done", "plain": "done", "todo": "done"}
    assert ("changed", "running") in progress.lines and ("fresh", "running") not in progress.lines


def test_until_stops_the_walk_after_that_stage(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    layout = StateLayout(site.state_dir)
    ctx = RunContext(
        site, layout, StateStore(site.state_dir), EventLog(layout.events), _Progress(), options={"until": "b"}
    )
    a, b, c = _Recorded("a", done=True), _Recorded("b", done=False), _Recorded("c", done=False)
    assert asyncio.run(walk(ctx, [a, b, c])) is None
    assert (b.ran, c.ran) == (True, False) and "c" not in ctx.stages


def test_until_names_the_stages_when_unknown(tmp_path: Path, capsys) -> None:
    from provisioner.cli import main

    site = make_site(tmp_path)
    assert main(["-i", str(site.source), "up", "--until", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a stage" in err and "machine-configs" in err and "Traceback" not in err
