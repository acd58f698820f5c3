"""Command-line value types that refuse what would hang or never end.

``click.FloatRange`` lets ``nan`` through (every comparison with it is false) and, without
an upper bound, ``inf`` and ``1e400``: a timeout or delay of either waits forever. Every
duration option uses ``Seconds``: finite, positive (or zero where that means "none"), and
at most the inventory's limit for one wait (``MAX_TIMEOUT_SECONDS``, 7 days).
"""

from __future__ import annotations

import math
from typing import Any

import click

from ..inventory.model import MAX_TIMEOUT_SECONDS


class Seconds(click.ParamType):
    """A duration in seconds: finite, > 0 (>= 0 with ``allow_zero``), <= 7 days."""

    name = "seconds"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        if number < 0 or (number == 0 and not self.allow_zero):
            self.fail(f"{value!r} must be {'>= 0' if self.allow_zero else '> 0'} seconds", param, ctx)
        if number > MAX_TIMEOUT_SECONDS:
            self.fail(f"{value!r} is more than the 7-day limit ({MAX_TIMEOUT_SECONDS:g} s)", param, ctx)
        return number


SECONDS = Seconds()
SECONDS_OR_ZERO = Seconds(allow_zero=True)
PORT = click.IntRange(1, 65535)
