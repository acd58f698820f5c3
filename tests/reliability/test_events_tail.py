"""The event log is read incrementally, rotated by size, and never loses or reuses an id."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from provisioner.events import EventLog


def _fill(log: EventLog, n: int, nodes: tuple[str, ...] = ("a", "b", "c")) -> None:
    for i in range(n):
        log.append("node.step", nodes[i % len(nodes)], step=i)


def test_a_reader_reads_only_the_bytes_appended_since_its_last_look(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer, reader = EventLog(path), EventLog(path)
    _fill(writer, 6)
    assert [e.id for e in reader.read()] == [1, 2, 3, 4, 5, 6]
    # Overwrite the bytes already indexed (same length): a reader that re-read the file
    # would now see garbage in place of events 1-6; an incremental one never looks back.
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write(b"x" * (size - 1))
    writer2 = EventLog(tmp_path / "other.jsonl")  # unrelated; keeps the test honest about ids
    writer2.append("noise")
    with open(path, "ab") as fh:
        fh.write(b'{"data":{},"id":7,"kind":"late","node":"b","outcome":"ok","time":1.0}\n')
    assert [e.id for e in reader.read()] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.id for e in reader.read(since=6)] == [7]
    assert [e.kind for e in reader.iter(5, node="b")] == ["late"]


def test_a_torn_last_line_waits_for_its_end_and_the_next_append_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    _fill(log, 2)
    line = b'{"data":{},"id":3,"kind":"k","node":"a","outcome":"ok","time":1.0}\n'
    with open(path, "ab") as fh:
        fh.write(line[:20])  # a writer died mid-line
    reader = EventLog(path)
    assert [e.id for e in reader.read()] == [1, 2]
    with open(path, "ab") as fh:
        fh.write(line[20:])  # ...or it was only slow: the rest arrives
    assert [e.id for e in reader.read()] == [1, 2, 3]
    with open(path, "ab") as fh:
        fh.write(line[:20].replace(b'"id":3', b'"id":4'))  # this one really died
    ev = log.append("after.crash", "a")
    assert ev.id == 4
    assert [e.kind for e in reader.read(since=3)] == ["after.crash"]


def test_polling_one_node_returns_only_its_new_events(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    _fill(log, 30)
    last = log.last_id()
    log.append("config.fetch", "b", bytes=10)
    log.append("config.fetch", "a", bytes=11)
    assert [(e.node, e.kind) for e in log.iter(last, node="b")] == [("b", "config.fetch")]
    assert log.latest("a").kind == "config.fetch"
    assert log.latest("a", "node.step").data["step"] == 27
    assert log.latest("nobody") is None
    log.append("dhcp.lease", None, "unknown", mac="x")
    assert [e.kind for e in log.iter(last, node=None)] == ["dhcp.lease"]


def test_rotation_keeps_ids_monotonic_and_readers_follow_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=1000, keep=3)
    follower = EventLog(path, max_bytes=1000, keep=3)
    seen: list[int] = []
    for _ in range(12):
        _fill(log, 5)
        seen += [e.id for e in follower.iter(seen[-1] if seen else 0)]
    assert seen == list(range(1, 61))  # nothing lost, nothing twice, across every rotation
    assert path.stat().st_size <= 1000
    rotated = sorted(p.name for p in tmp_path.glob("events.jsonl.*") if not p.name.endswith(".lock"))
    assert rotated == ["events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.glob("events.jsonl.[0-9]"))

    # A fresh reader sees the retained history in order: rotated files, then the current one.
    fresh = EventLog(path, max_bytes=1000, keep=3)
    ids = [e.id for e in fresh.read()]
    assert ids == sorted(ids) and ids[-1] == 60 and len(ids) == len(set(ids))
    assert [e.id for e in fresh.read(since=ids[0])] == ids[1:]
    assert fresh.last_id() == 60
    # The follower's index dropped files older than the previous one (bounded memory), yet
    # its full history is the same: older events are streamed from the rotated files.
    assert [e.id for e in follower.read()] == ids
    assert [e.data["step"] for e in follower.iter(0, node="a")] == [
        e.data["step"] for e in fresh.iter(0, node="a")
    ]

    # A writer that died right after renaming the log away: the next one continues the ids.
    log.rotated(3).unlink()
    for n in (2, 1):
        os.replace(log.rotated(n), log.rotated(n + 1))
    os.replace(path, log.rotated(1))
    assert EventLog(path, max_bytes=2000).last_id() == 60
    assert EventLog(path, max_bytes=2000).append("next").id == 61


def test_a_rotation_between_two_polls_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventLog(path, max_bytes=1500, keep=2)
    reader = EventLog(path, max_bytes=1500, keep=2)
    _fill(writer, 3)
    assert len(reader.read()) == 3
    _fill(writer, 25)  # several rotations while the reader is not looking; keep=2 retains enough
    got = [e.id for e in reader.iter(3)]
    retained = [e.id for e in EventLog(path, keep=2).read()]
    assert got == [i for i in range(4, 29) if i >= retained[0]]


def _writer(path: str, name: str, n: int) -> None:
    log = EventLog(Path(path), max_bytes=4000, keep=50)
    for i in range(n):
        log.append("node.step", name, i=i)


def test_several_processes_get_unique_ids_through_rotations(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), f"n{i}", 40)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events = EventLog(path, max_bytes=4000, keep=50).read()
    assert [e.id for e in events] == list(range(1, 121))
    for i in range(3):  # each writer's own events stay in its order
        assert [e.data["i"] for e in events if e.node == f"n{i}"] == list(range(40))


def test_a_malformed_line_is_reported_with_file_and_line(tmp_path: Path, caplog) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    _fill(log, 2)
    with open(path, "ab") as fh:
        fh.write(b"this is not json\n")
    log.append("after", "a")
    with caplog.at_level(logging.WARNING, logger="provisioner.events"):
        events = EventLog(path).read()
    assert [e.kind for e in events] == ["node.step", "node.step", "after"]
    assert f"{path}:3: malformed event line skipped" in caplog.text
    assert "provisioner status" in caplog.text


@pytest.mark.parametrize("keep", [1, 3])
def test_the_oldest_rotated_file_is_dropped(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=600, keep=keep)
    _fill(log, 40)
    assert sorted(p.name for p in tmp_path.glob("events.jsonl.[0-9]*")) == [
        f"events.jsonl.{n}" for n in range(1, keep + 1)
    ]
    assert log.last_id() == 40


def test_a_writer_that_never_reads_takes_the_last_id_from_the_tail(tmp_path: Path, caplog) -> None:
    """The dnsmasq lease hook is a process per DHCP event: it must not index the whole log."""
    path = tmp_path / "events.jsonl"
    _fill(EventLog(path), 50)
    # Garbage over the first half: a writer that read it would warn about each line.
    with open(path, "r+b") as fh:
        fh.write(b"\n".join([b"garbage"] * 20) + b"\n")
    with caplog.at_level(logging.WARNING, logger="provisioner.events"):
        assert EventLog(path).append("dhcp.lease", "a").id == 51
    assert "malformed" not in caplog.text


def test_a_writer_finds_the_last_id_behind_a_long_garbage_tail(tmp_path: Path, caplog) -> None:
    path = tmp_path / "events.jsonl"
    with open(path, "wb") as fh:  # 1,000 events, then 70 KB of hand-edited garbage
        for i in range(1, 1001):
            fh.write(b'{"data":{},"id":%d,"kind":"k","node":"a","outcome":"ok","time":1.0}\n' % i)
        fh.write((b"#" * 99 + b"\n") * 700)
    assert EventLog(path).append("after.garbage").id == 1001
    with caplog.at_level(logging.WARNING, logger="provisioner.events"):
        assert [e.id for e in EventLog(path).read(since=999)] == [1000, 1001]
    assert len(caplog.records) == 1  # one located warning, not 700
    assert f"{path}:1001: malformed event line skipped (and 699 more, up to line 1700)" in caplog.text
