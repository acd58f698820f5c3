"""How the platform commands show progress until the pipeline's own reporter takes over.

Implements the ``progress.stage(name, status, message, level="info")`` method of the run
context: on a terminal one live line rewritten in place for ``running`` updates (so "HelmReleases
41/76 ready — waiting: …" does not scroll 200 lines), otherwise one line per change, or one JSON
object per line with ``-o json``. Everything goes to stderr, so ``-o json`` results on stdout stay
parseable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class PlatformProgress:
    def __init__(self, mode: str = "text", stream: TextIO | None = None) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self.tty = mode == "text" and self.stream.isatty()
        self._live = False
        self.lines: list[tuple[str, str, str, str]] = []  # (stage, status, message, level), for tests

    def stage(self, name: str, status: str, message: str, level: str = "info") -> None:
        self.lines.append((name, status, message, level))
        if self.mode == "json":
            record = {
                "time": time.time(),
                "stage": name,
                "status": status,
                "message": message,
                "level": level,
            }
            self.stream.write(json.dumps(record) + "\n")
        elif self.tty and status == "running":
            self.stream.write(f"\r\x1b[2K{name}: {message}")
            self._live = True
        else:
            if self._live:
                self.stream.write("\n")
                self._live = False
            prefix = "warning: " if level == "warning" else ""
            self.stream.write(f"{prefix}{name}: {status}: {message}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._live:
            self.stream.write("\n")
            self._live = False
