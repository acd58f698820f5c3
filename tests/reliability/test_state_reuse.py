"""``StateStore`` reuses the record it last wrote or read while the file is unchanged, and reads
again whenever it changed: another writer's record is never shadowed by what this store knew."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioner.records import MalformedState
from provisioner.state import NodeRecord, Phase, StateStore


def test_a_record_written_by_another_store_is_read_not_the_remembered_one(tmp_path: Path) -> None:
    ours, theirs = StateStore(tmp_path), StateStore(tmp_path)
    ours.update("w1", phase=Phase.POWERED_OFF)
    theirs.update("w1", phase=Phase.PXE_SET, attempts=1)  # same length on disk as ours may be
    seen = ours.node("w1")
    assert (seen.phase, seen.attempts) == (Phase.PXE_SET, 1)
    # And an update through our store starts from their record, not from ours.
    assert ours.update("w1", error="x").attempts == 1


def test_a_record_replaced_by_one_of_the_same_size_is_read_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(NodeRecord("w1", phase=Phase.READY, installed=True))
    path = store.nodes_dir / "w1.json"
    text = path.read_text().replace('"phase": "ready"', '"phase": "blank"')
    assert len(text) == len(path.read_text())  # the same size, other content: ...
    replacement = path.with_name(".w1.other")
    replacement.write_text(text)
    os.replace(replacement, path)  # ... written the way every writer of records writes: a new file
    assert store.node("w1").phase is Phase.BLANK


def test_a_record_corrupted_after_this_store_wrote_it_is_an_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(NodeRecord("w1", phase=Phase.READY, installed=True))
    (store.nodes_dir / "w1.json").write_bytes(b'{"phase": "ready", ')
    with pytest.raises(MalformedState):
        store.node("w1")


def test_a_removed_record_reads_as_blank(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(NodeRecord("w1", phase=Phase.READY, installed=True))
    (store.nodes_dir / "w1.json").unlink()
    assert store.node("w1") == NodeRecord("w1")


def test_unchanged_records_are_not_read_back_before_each_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.update("w1", phase=Phase.POWERED_OFF)
    reads: list[Path] = []
    import provisioner.state as state_module

    real = state_module.read_record
    monkeypatch.setattr(
        state_module, "read_record", lambda path, *a, **k: reads.append(path) or real(path, *a, **k)
    )
    for phase in (Phase.PXE_SET, Phase.POWERED_ON, Phase.CONFIG_DELIVERED):
        store.update("w1", phase=phase)
    assert reads == []
    assert StateStore(tmp_path).node("w1").phase is Phase.CONFIG_DELIVERED  # what is on disk
