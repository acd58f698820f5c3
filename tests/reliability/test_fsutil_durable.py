"""Every rename or link under the state directory is followed by an fsync of the directory.

Without it a power loss can keep a file's data but lose its name: ``secrets.yaml`` gone
while the configs derived from it survive. ``os.fsync`` is wrapped to record which
descriptors it flushed and whether each is a directory, in order with the renames/links.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisioner import fsutil


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """("fsync-dir", path) / ("fsync-file", "") / ("replace"|"link", dest), in call order."""
    log: list[tuple[str, str]] = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            log.append(("fsync-dir", os.readlink(f"/proc/self/fd/{fd}")))
        else:
            log.append(("fsync-file", ""))
        real_fsync(fd)

    def replace(src: str, dst: os.PathLike[str] | str) -> None:
        real_replace(src, dst)
        log.append(("replace", str(dst)))

    def link(src: str, dst: os.PathLike[str] | str) -> None:
        real_link(src, dst)
        log.append(("link", str(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    return log


def test_atomic_write_syncs_the_directory_after_the_rename(tmp_path: Path, calls) -> None:
    target = tmp_path / "state" / "nodes" / "cp1.json"
    fsutil.atomic_write(target, "{}\n")
    assert target.read_text() == "{}\n"
    kinds = [k for k, _ in calls]
    assert kinds == ["fsync-file", "replace", "fsync-dir"]
    assert calls[-1] == ("fsync-dir", str(target.parent))


def test_write_once_syncs_the_directory_after_the_link(tmp_path: Path, calls) -> None:
    target = tmp_path / "state" / "secrets.yaml"
    assert fsutil.write_once(target, b"secret: 1\n") is True
    kinds = [k for k, _ in calls]
    assert kinds == ["fsync-file", "link", "fsync-dir"]
    assert calls[-1] == ("fsync-dir", str(target.parent))
    assert target.stat().st_mode & 0o777 == 0o600
    # Nothing is left beside it (the temp name was removed before the directory sync).
    assert [p.name for p in target.parent.iterdir()] == ["secrets.yaml"]


def test_write_once_never_overwrites_and_needs_no_sync_then(tmp_path: Path, calls) -> None:
    target = tmp_path / "secrets.yaml"
    target.write_text("first\n")
    assert fsutil.write_once(target, "second\n") is False
    assert target.read_text() == "first\n"
    assert ("link", str(target)) not in calls


def test_fsync_dir_flushes_exactly_that_directory(tmp_path: Path, calls) -> None:
    fsutil.fsync_dir(tmp_path)
    assert calls == [("fsync-dir", str(tmp_path))]


def test_private_dir_makes_each_new_directory_durable_in_its_parent(tmp_path: Path, calls) -> None:
    target = tmp_path / "a" / "b" / "state"
    fsutil.private_dir(target)
    assert target.stat().st_mode & 0o777 == 0o700
    assert calls == [
        ("fsync-dir", str(tmp_path)),
        ("fsync-dir", str(tmp_path / "a")),
        ("fsync-dir", str(tmp_path / "a" / "b")),
    ]
    calls.clear()
    fsutil.private_dir(target)  # already there: nothing to sync
    assert calls == []
