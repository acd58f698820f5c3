"""``python -m provisioner.lab.kube.cozysim --kubeconfig PATH [--delay S] [--faults SPEC]``.

Runs the Cozystack simulator (a stand-in for Cozystack's installer, Flux and operators) until SIGTERM
or SIGINT, then gives up its Lease. Bad arguments (unreadable kubeconfig, bad fault spec, negative
delay) are reported on stderr naming the option, with exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import httpx2
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ConfigError

from provisioner.lab.kube.cozysim.controller import Simulator
from provisioner.lab.kube.faults import FaultSpecError, KubeFaults, parse_faults


class UsageError(Exception):
    """A bad option value; the message names the option."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m provisioner.lab.kube.cozysim",
        description="Cozystack simulator (lab stand-in): reacts to the platform objects like Cozystack does.",
    )
    parser.add_argument("--kubeconfig", required=True, help="admin kubeconfig of the API server")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds a HelmRelease install takes")
    parser.add_argument("--faults", default="", help="fault spec (stuck=<release>;..., fail=<release>;...)")
    parser.add_argument("--identity", default="", help="lease holder identity (default: host-pid)")
    parser.add_argument("--resync", type=float, default=5.0, help="seconds between full passes")
    parser.add_argument(
        "--lease-duration", type=int, default=15, help="seconds before a silent leader's Lease may be taken"
    )
    parser.add_argument(
        "--watch-idle",
        type=float,
        default=15.0,
        help="seconds a watch may stay silent before it is resumed (its server timeout is 5 s less)",
    )
    parser.add_argument("--request-timeout", type=float, default=10.0, help="seconds per API request")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return parser


def _load(args: argparse.Namespace) -> tuple[KubeConfig, KubeFaults]:
    path = Path(args.kubeconfig)
    if args.delay < 0:
        raise UsageError(f"--delay: {args.delay} must not be negative")
    if args.resync <= 0:
        raise UsageError(f"--resync: {args.resync} must be positive")
    if args.watch_idle < 6:
        raise UsageError(f"--watch-idle: {args.watch_idle} must be at least 6 seconds")
    if args.request_timeout <= 0:
        raise UsageError(f"--request-timeout: {args.request_timeout} must be positive")
    if args.lease_duration < 2:
        raise UsageError(f"--lease-duration: {args.lease_duration} must be at least 2 seconds")
    try:
        faults = parse_faults(args.faults)
    except FaultSpecError as exc:
        raise UsageError(f"--faults: {exc}") from None
    if not path.is_file():
        raise UsageError(f"--kubeconfig: {path}: no such file")
    try:
        config = KubeConfig.from_file(str(path))
        config.get()  # resolves the current context now, so a broken file fails here
    except KeyError as exc:
        raise UsageError(f"--kubeconfig: {path}: not a usable kubeconfig (missing key {exc})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"--kubeconfig: {path}: not a usable kubeconfig (YAML error{line})") from None
    except (ConfigError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"--kubeconfig: {path}: not a usable kubeconfig ({exc})") from None
    return config, faults


async def _watch_kubeconfig(path: Path, stop: asyncio.Event, every: float = 2.0) -> None:
    """Stop when the kubeconfig disappears: the cluster it named was torn down (``lab kube down``
    removes it), so a simulator left behind by a crashed parent does not retry a dead server forever."""
    while not stop.is_set():
        if not path.exists():
            logging.getLogger("cozysim").info("%s is gone: the cluster was torn down, stopping", path)
            stop.set()
            return
        await asyncio.sleep(every)


async def _main(config: KubeConfig, faults: KubeFaults, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    identity = args.identity or f"{socket.gethostname()}-{os.getpid()}"
    client = AsyncClient(
        config=config, field_manager="cozystack-simulator", timeout=httpx2.Timeout(args.request_timeout)
    )
    sim = Simulator(
        client,
        identity=identity,
        delay=args.delay,
        faults=faults,
        resync=args.resync,
        lease_duration=args.lease_duration,
        watch_idle=args.watch_idle,
    )
    logging.getLogger("cozysim").info(
        "starting as %s (delay %.2fs, faults %s)", identity, args.delay, faults.to_text()
    )
    watchdog = asyncio.create_task(_watch_kubeconfig(Path(args.kubeconfig), stop))
    try:
        await sim.run(stop)
    finally:
        watchdog.cancel()
        await client.close()
    logging.getLogger("cozysim").info("stopped")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s cozysim stand-in %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config, faults = _load(args)
    except UsageError as exc:
        print(f"cozysim: error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_main(config, faults, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
