"""Node records written at once share their directory's fsync (group commit), and every save
returns only after an fsync that started after its rename."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from provisioner import state as state_mod
from provisioner.state import Phase, StateStore


def test_concurrent_saves_share_directory_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path / "state")
    store.update("warm", phase=Phase.BLANK)  # the directories exist (their own fsyncs are behind us)
    renamed: list[str] = []  # what was on disk (by name) when each directory fsync started
    syncs: list[set[str]] = []
    real = state_mod.fsync_dir

    def slow_sync(directory: Path) -> None:
        syncs.append({p.stem for p in directory.glob("*.json")})
        threading.Event().wait(0.02)  # a busy disk
        real(directory)

    monkeypatch.setattr(state_mod, "fsync_dir", slow_sync)
    durable_at_return: dict[str, int] = {}

    def writer(i: int) -> None:
        store.update(f"n{i}", phase=Phase.POWERED_OFF)
        renamed.append(f"n{i}")
        durable_at_return[f"n{i}"] = len(syncs)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(syncs) < 40 / 2, f"{len(syncs)} directory fsyncs for 40 concurrent saves"
    for name, seen in durable_at_return.items():  # some fsync that had seen its file had ended
        assert any(name in syncs[k] for k in range(seen)), name
    assert {r.name for r in store.all()} == {f"n{i}" for i in range(40)} | {"warm"}
    assert all(store.node(f"n{i}").phase is Phase.POWERED_OFF for i in range(40))
