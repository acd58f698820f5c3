"""Event appends from many threads are committed in groups: each append returns its own event once
it is on disk, ids stay unique and in file order, and concurrent appends share fsyncs."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from provisioner import events as events_mod
from provisioner.events import EventLog


def test_concurrent_appends_share_fsyncs_and_keep_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.append("run.start")  # the file exists: its directory's fsync is behind us
    fsyncs = 0
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        threading.Event().wait(0.02)  # a busy disk: appends pile up behind the one writing
        real_fsync(fd)

    monkeypatch.setattr(events_mod.os, "fsync", slow_fsync)
    got: dict[str, int] = {}
    lock = threading.Lock()

    def writer(w: int) -> None:
        for i in range(10):
            ev = log.append("node.step", node=f"n{w}", step=i)
            with lock:
                got[f"n{w}:{i}"] = ev.id

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    ids = [line["id"] for line in lines]
    assert ids == list(range(1, 162)), "unique, gap-free ids in file order"
    by_key = {f"{line['node']}:{line['data']['step']}": line["id"] for line in lines[1:]}
    assert by_key == got, "each append returned the event written for it"
    for w in range(16):  # one writer's events in its own order
        mine = [got[f"n{w}:{i}"] for i in range(10)]
        assert mine == sorted(mine)
    assert fsyncs < 160 / 2, f"{fsyncs} fsyncs for 160 concurrent appends"
    assert [e.id for e in EventLog(tmp_path / "events.jsonl").iter(0)] == ids


def test_a_failed_write_fails_every_append_of_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.append("run.start")

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(events_mod.os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        log.append("node.step", node="a")
    monkeypatch.undo()
    assert log.append("node.step", node="b").node == "b", "the next append leads a fresh group"
