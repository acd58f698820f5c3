"""Figures the end-to-end run prints: each node's power-on -> installed time."""

from __future__ import annotations

from typing import Any

TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("e2e: power-on -> installed OS answering (resumed run)")
        for name, secs in sorted(TIMINGS.items()):
            terminalreporter.write_line(f"{name:<8} {secs:6.1f} s")
