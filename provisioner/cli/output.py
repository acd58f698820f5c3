"""One way to print results: text for people, JSON for machines (``--output json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click


def emit(data: Any, text: Callable[[Any], str] | None = None) -> None:
    """Print ``data`` as JSON or through ``text`` depending on ``--output``."""
    ctx = click.get_current_context()
    app = ctx.find_root().obj
    if app is not None and app.output == "json":
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif text is not None:
        click.echo(text(data))
    else:
        click.echo(json.dumps(data, indent=2, default=str))


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow") + message, err=True)
