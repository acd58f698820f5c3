"""The ``provisioner`` command: global options, error handling and exit codes.

Exit codes: 0 done, 1 an operation failed, 2 bad input or usage. Every error the tool
raises on purpose is printed as a message; only a genuine bug shows a traceback, and
only with ``--debug``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import click

from .. import __version__
from ..errors import ProvisionerError
from .context import DEFAULT_INVENTORY, App

# Each module registers its own group of subcommands (one module per stage).
COMMAND_MODULES = ["site", "talos", "cluster", "lab", "bmc", "netboot"]
COMMAND_MODULES.append("report")  # the HTML site report (provisioner/report/)
COMMAND_MODULES.append("platform")  # the Cozystack platform stage (provisioner/cozystack/)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--inventory",
    "-i",
    "inventory",
    type=click.Path(path_type=Path),
    default=lambda: os.environ.get("PROVISIONER_INVENTORY", DEFAULT_INVENTORY),
    show_default=DEFAULT_INVENTORY,
    help="Inventory file, or a directory of YAML files merged into one site.",
)
@click.option("--rack", "racks", multiple=True, metavar="NAME", help="Only nodes in this rack (repeatable).")
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable).")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", help="Output format.")
@click.option("--verbose", "-v", count=True, help="More log output (repeatable).")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks of internal errors.")
@click.version_option(__version__, prog_name="provisioner")
@click.pass_context
def cli(
    ctx: click.Context,
    inventory: Path,
    racks: tuple[str, ...],
    nodes: tuple[str, ...],
    output: str,
    verbose: int,
    debug: bool,
) -> None:
    """Take a site from racked, powered-off servers to a running Cozystack platform."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if verbose == 0:
        # The BMC libraries log every retried request; our own errors already say what failed.
        for noisy in ("sushy", "pyghmi", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    ctx.obj = App(inventory_path=inventory, racks=racks, nodes=nodes, output=output, verbose=verbose)
    ctx.meta["debug"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(cli)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code instead of raising SystemExit."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="provisioner", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2 if isinstance(exc, click.UsageError | click.BadParameter) else exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except ProvisionerError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --debug
        if debug:
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)", err=True
        )
        return 1
    # Commands that finish with a verdict (up: 1 when a node failed) return their exit code.
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
