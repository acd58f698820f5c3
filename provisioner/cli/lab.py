"""``provisioner lab``: the virtual lab (QEMU nodes, emulated BMCs) for an inventory.

Every lab address lives in the lab's network namespace; ``lab exec -- CMD`` runs the
tool (or ipmitool, curl, ...) in there, which is how anything reaches the lab.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from .context import App, pass_app
from .output import emit
from .params import SECONDS_OR_ZERO


def register(cli: click.Group) -> None:
    cli.add_command(lab)


_lab_dir_option = click.option(
    "--lab-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Lab state directory (default $PROVISIONER_LAB_DIR or .lab).",
)


@click.group()
def lab() -> None:
    """The virtual lab: QEMU VMs and emulated BMCs standing in for the inventory's servers."""


@lab.command("up")
@_lab_dir_option
@click.option(
    "--bmc-faults",
    metavar="SPEC",
    help="Make the emulated BMCs misbehave: 'acceptance' or error=R,noop=R,timeout=R[,seed=N].",
)
@pass_app
def lab_up(app: App, lab_dir: Path | None, bmc_faults: str | None) -> None:
    """Create the namespace, VMs (powered off) and BMC emulators for the inventory."""
    from ..lab.lab import up

    state = up(app.site, lab_dir, faults=_parse_faults(bmc_faults))

    def text(s: dict[str, Any]) -> str:
        lines = [f"lab {s['cluster']} up in namespace {s['namespace']} ({s['address']}), {s['up_seconds']} s"]
        for name, ep in sorted(s["endpoints"].items()):
            lines.append(f"  {name:<12} {ep['protocol']}://{ep['address']}:{ep['port']}  (powered off)")
        lines.append(f"reach it with: provisioner lab exec -- <command>   (image {s['image']})")
        return "\n".join(lines)

    emit(state, text)


def _parse_faults(text: str | None) -> dict[str, float] | None:
    """``acceptance`` (10% errors, 5% silent no-ops, 2% timeouts), or explicit rates
    such as ``error=0.1,noop=0.05,timeout=0.02,seed=7``."""
    if not text:
        return None
    if text == "acceptance":
        text = "error=0.10,noop=0.05,timeout=0.02"
    names = {"error": "error_rate", "noop": "noop_rate", "timeout": "timeout_rate", "seed": "seed"}
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in names:
            raise click.BadParameter(
                f"unknown fault {key!r} (use error, noop, timeout, seed)", param_hint="--bmc-faults"
            )
        try:
            out[names[key.strip()]] = int(value) if key.strip() == "seed" else float(value)
        except ValueError:
            raise click.BadParameter(f"{part!r} needs a number", param_hint="--bmc-faults") from None
    return out


@lab.command("down")
@_lab_dir_option
@pass_app
def lab_down(app: App, lab_dir: Path | None) -> None:
    """Stop every lab process and delete the namespace, taps and disks."""
    from ..lab.lab import down

    result = down(app.site, lab_dir)
    emit(
        result,
        lambda r: (
            f"lab namespace {r['namespace']} removed ({len(r['killed'])} processes stopped)"
            + (
                f"; node records reset to blank (the VMs are gone): {', '.join(r['forgotten'])}"
                if r.get("forgotten")
                else ""
            )
        ),
    )


@lab.command("status")
@_lab_dir_option
@pass_app
def lab_status(app: App, lab_dir: Path | None) -> None:
    """Namespace, VM power state and boot device, BMC endpoints."""
    from ..lab.lab import status

    st = status(app.site, lab_dir)

    def text(s: dict[str, Any]) -> str:
        lines = [f"lab namespace {s['namespace']}: {'up' if s['up'] else 'down'}"]
        for n in s["nodes"]:
            boot = n["boot"] or {}
            how = f"{boot.get('device', '-')}{'' if boot.get('persistent', True) else ' (once)'}"
            lines.append(
                f"  {n['name']:<12} {'on ' if n['powered'] else 'off'}  boot {how:<12} {n['bmc'] or '-'}"
            )
        return "\n".join(lines)

    emit(st, text)


@lab.command("console")
@click.argument("node")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the console writes.")
@_lab_dir_option
@pass_app
def lab_console(app: App, node: str, follow: bool, lab_dir: Path | None) -> None:
    """Print a node's serial console log (ttyS0)."""
    from ..lab.lab import LabPaths, lab_dir_default

    try:
        app.site.node(node)
    except KeyError:
        raise InputError(f"lab console: no node {node!r} in {app.inventory_path}") from None
    path = LabPaths(Path(lab_dir or lab_dir_default())).vms / node / "console.log"
    if not path.exists():
        raise InputError(f"lab console: {node} has no console log yet ({path}); is the lab up and the VM on?")
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not follow:
                break
            else:
                time.sleep(0.3)


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def lab_exec(app: App, command: tuple[str, ...]) -> None:
    """Run COMMAND inside the lab namespace (use `--` before it)."""
    from ..lab import netns

    ns = netns.namespace_name(app.site.cluster.name)
    if not netns.exists(ns):
        raise InputError(f"lab exec: the lab namespace {ns} does not exist; run `provisioner lab up` first")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("ip", netns.exec_argv(ns, list(command)))


# --- lab kube: the Kubernetes API server stand-in on the host (provisioner/lab/kube/) ---------------


@lab.group("kube")
def lab_kube() -> None:
    """An existing cluster on this host: local etcd, the API server stand-in, the Cozystack simulator."""


def _kube_root(lab_dir: Path | None) -> Path:
    from ..lab.lab import lab_dir_default

    return Path(lab_dir or lab_dir_default()) / "kube"


@lab_kube.command("up")
@_lab_dir_option
@click.option("--faults", metavar="SPEC", help="seed=N,api500=R,reset=R,stall-watch=R,stuck=A;B,fail=C")
@click.option("--delay", type=SECONDS_OR_ZERO, help="Simulator: seconds before a release goes Ready.")
def lab_kube_up(lab_dir: Path | None, faults: str | None, delay: float | None) -> None:
    """Start etcd and the API server stand-in on 127.0.0.1 (6443 if free) and write the kubeconfig."""
    from ..errors import OperationError
    from ..lab.kube.faults import FaultSpecError, parse_faults
    from ..lab.kube.host import KubeHostError, up

    try:
        parse_faults(faults)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    try:
        host = up(_kube_root(lab_dir), faults=faults, delay=delay)
    except KubeHostError as exc:
        raise OperationError(f"lab kube up: {exc}") from None
    emit(
        host.as_dict(),
        lambda h: (
            f"kube stand-in up at {h['server']}"
            + (" (with the Cozystack simulator)" if h["simulator"] else "")
            + f"\n{h['kubeconfig']}"
        ),
    )


@lab_kube.command("down")
@_lab_dir_option
def lab_kube_down(lab_dir: Path | None) -> None:
    """Stop the simulator, the API server stand-in and etcd; remove their runtime files."""
    from ..lab.kube.host import down

    result = down(_kube_root(lab_dir))
    emit(result, lambda r: f"kube stand-in down ({', '.join(r['stopped']) or 'nothing was running'})")


# --- lab fleet: simulated machines for `up` at scale (provisioner/lab/fleet/) -------------------------


@lab.group("fleet")
def lab_fleet() -> None:
    """Simulated machines (no VMs) on loopback addresses, for running the real `up` at scale."""


@lab_fleet.command("up")
@click.option("--nodes", type=click.IntRange(3, 62500), required=True, help="Simulated machines (>= 3).")
@click.option("--workdir", type=click.Path(path_type=Path), help="Keep inventory, state and logs here.")
@click.option("--bmc-latency", type=SECONDS_OR_ZERO, default=0.0, help="Seconds per BMC round trip.")
@click.option("--boot-delay", type=SECONDS_OR_ZERO, default=0.0, help="Power-on -> netboot request.")
@click.option("--install-delay", type=SECONDS_OR_ZERO, default=0.0, help="Config fetched -> installed.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def lab_fleet_up(
    nodes: int,
    workdir: Path | None,
    bmc_latency: float,
    boot_delay: float,
    install_delay: float,
    as_json: bool,
) -> int:
    """Start a simulated fleet in its own network namespace, run `provisioner up` on it, print the
    `up` process's figures (needs root)."""
    from ..lab.fleet.__main__ import main as fleet_main

    argv = ["up", "--nodes", str(nodes), "--bmc-latency", str(bmc_latency), "--boot-delay", str(boot_delay)]
    argv += ["--install-delay", str(install_delay)]
    if workdir is not None:
        argv += ["--workdir", str(workdir)]
    if as_json:
        argv.append("--json")
    return fleet_main(argv)
