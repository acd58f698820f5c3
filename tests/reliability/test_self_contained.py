"""The repository tests and runs on its own: nothing reads the team's ``shared`` directory.

A fresh clone without the shared directory beside it must pass ``make test``, so reference data the tests
need is copied under ``tests/data/`` (with a SOURCE note) and the package carries its own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("provisioner", "tests", "benchmarks", "scripts")
# A path into the shared directory: absolute, relative to the checkout, or joined as a
# path component ("shared" as a string literal). Prose such as "see shared/reference/x.md"
# or "never read it at run time" is documentation, not a read, and is not matched. The pattern is
# assembled from its parts so that this file holds no such path itself.
_S = "shared"
_SHARED_PATH = re.compile(
    rf"""(?<![`\w])/work/{_S}(?:/|["'])|\.\./{_S}/|["']{_S}["']|["']/?{_S}/"""
)


def _offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in {".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml"}:
            continue
        if path.resolve() == Path(__file__).resolve() or "upstream" in path.parts:
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if _SHARED_PATH.search(line):
                found.append(f"{path.relative_to(root)}:{lineno}: {line.strip()}")
    return found


@pytest.mark.parametrize("top", SCANNED)
def test_nothing_reads_the_shared_directory(top: str) -> None:
    assert _offenders(REPO / top) == []


def test_the_makefile_does_not_reach_outside_the_repository() -> None:
    text = (REPO / "Makefile").read_text()
    assert not _SHARED_PATH.search(text)


def test_the_detector_catches_every_way_of_spelling_the_path(tmp_path: Path) -> None:
    """Guard against a detector that can never fire."""
    bad = tmp_path / "x" / "bad.py"
    bad.parent.mkdir()
    s = "shared"  # the sample is assembled so this file itself holds no such path
    bad.write_text(
        f'A = REPO.parent / "{s}" / "talos"\nB = "/work/{s}/talos/x.json"\nC = "../{s}/seeds"\n'
        f"# see {s}/reference/talos.md for field numbers\n"
    )
    hits = _offenders(tmp_path)
    assert [h.split(":")[1] for h in hits] == ["1", "2", "3"]
    bad.write_text(
        "# see shared/reference/talos.md\nshared_lock = True\n"
        f'"""Never read ``/work/{s}`` at run time."""\n'
    )
    assert _offenders(tmp_path) == []


def test_the_talos_schemas_are_in_the_repository() -> None:
    schemas = REPO / "tests" / "data" / "talos-schemas"
    assert (schemas / "SOURCE.md").is_file()
    for minor in ("v1.11", "v1.13"):
        text = (schemas / f"config.schema.{minor}.json").read_text()
        assert f"https://talos.dev/{minor}/schemas/config.schema.json" in text
