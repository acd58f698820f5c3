"""Network boot for a rack on its own L2 segment: the service runs on the rack's boot server.

The tool's own dnsmasq cannot answer DHCP on another segment, so ``provisioner netboot
push --rack R`` connects to ``racks[R].boot_server`` over SSH (paramiko) and uploads a
self-contained bundle into a private directory there (default
``~/.provisioner/<cluster>/<rack>/``, mode 0700, files 0600):

(``remote_payload`` builds it: agent, manifest, configs, dnsmasq files, assets) and drives
the agent there. The SSH transport (host keys, atomic uploads) is ``remote_ssh``; the agent
itself is ``remote_agent``. Events the agent writes on the boot server are pulled back into
the local event log by ``push``, ``status`` and ``stop``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..events import EventLog
from ..fsutil import atomic_write, locked, private_dir
from ..inventory.model import Node, Site
from ..layout import StateLayout
from ..state import StateStore
from .assets import sha256_file
from .remote_payload import (
    AGENT_ZIP,
    LAUNCHER,
    MIN_PYTHON,
    REMOTE,
    Bundle,
    _sha256_bytes,
    agent_zip,
    build_bundle,
    remote_rel,
)
from .remote_ssh import (
    BootServer,
    BootTarget,
    _ensure_private_dir,
    _sftp_error,
    _upload,
    boot_target,
    remote_dir_for,
    session,
)

log = logging.getLogger(__name__)

__all__ = [
    "BootTarget",
    "agent_zip",
    "boot_target",
    "build_bundle",
    "push",
    "remote_status",
    "remote_stop",
    "session",
]


# --- events ---------------------------------------------------------------------------------
def _cursor_path(site: Site, rack: str) -> Path:
    layout = StateLayout(site.state_dir)
    private_dir(layout.netboot_remote_dir)
    return layout.netboot_remote_record(rack)


def pull_events(bs: BootServer, root: str, site: Site, events: EventLog) -> int:
    """Append the boot server's new events to the local log (kind, node, outcome, data,
    plus ``remote``: rack, host, remote id and time). Returns how many were merged."""
    t = bs.target
    cursor_path = _cursor_path(site, t.rack)
    where = f"{t.user}@{t.host}:{t.port}:{root}"
    with locked(cursor_path.with_suffix(".lock")):
        try:
            cursor = json.loads(cursor_path.read_text())
        except (OSError, ValueError):
            cursor = {}
        if cursor.get("where") != where:
            cursor = {"where": where, "offset": 0, "last_id": 0}
        path = f"{root}/{remote_rel(REMOTE.events)}"
        try:
            size = bs.sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise _sftp_error(bs, f"cannot stat {path}", exc) from None
        if size < cursor["offset"]:  # the remote log was replaced
            cursor.update(offset=0, last_id=0)
        if size == cursor["offset"]:
            return 0
        try:
            with bs.sftp.open(path, "rb") as fh:
                fh.seek(cursor["offset"])
                chunk = fh.read(size - cursor["offset"])
        except OSError as exc:
            raise _sftp_error(bs, f"cannot read {path}", exc) from None
        merged = 0
        end = chunk.rfind(b"\n") + 1  # complete lines only; a torn tail waits for next time
        for line in chunk[:end].splitlines():
            try:
                raw = json.loads(line)
                rid = int(raw["id"])
                kind = str(raw["kind"])
            except (ValueError, KeyError, TypeError):
                continue
            if rid <= cursor["last_id"]:
                continue
            data = {k: v for k, v in (raw.get("data") or {}).items() if k not in ("kind", "node", "outcome")}
            data["remote"] = {"rack": t.rack, "host": t.host, "id": rid, "time": raw.get("time")}
            events.append(kind, raw.get("node"), raw.get("outcome", "ok"), **data)
            cursor["last_id"] = rid
            merged += 1
        cursor["offset"] += end
        atomic_write(cursor_path, json.dumps(cursor) + "\n", mode=0o600)
        return merged


# --- the commands ---------------------------------------------------------------------------
def _python(bs: BootServer) -> str:
    rc, out, err = bs.run("python3 -c 'import sys; print(sys.executable); print(*sys.version_info[:2])'")
    if rc != 0:
        raise bs.fail("python3 is needed on the boot server to run the netboot agent", err)
    try:
        first, second = out.strip().splitlines()[-2:]
        exe, version = first.strip(), tuple(int(x) for x in second.split())
    except ValueError:
        raise bs.fail("cannot tell the boot server's python3 version", out) from None
    if version < MIN_PYTHON:
        raise bs.fail(f"python3 {version[0]}.{version[1]} is too old; the agent needs 3.10 or newer")
    return exe


def _remote_interface(bs: BootServer, server: str) -> str | None:
    rc, out, _ = bs.run("ip -o addr show")
    if rc != 0:
        return None
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[3].split("/")[0] == server:
            return f[1].split("@")[0]
    return None


def _remote_sha256(bs: BootServer, root: str, names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    q = " ".join(shlex.quote(n) for n in names)
    _, out, _ = bs.run(f"cd {shlex.quote(root)} && sha256sum -- {q} 2>/dev/null", timeout=600)
    sums = {}
    for line in out.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64:
            sums[name.strip()] = digest
    return sums


def _launcher_cmd(bs: BootServer, root: str, action: str) -> tuple[int, dict[str, Any], str]:
    rc, out, err = bs.run(f"cd {shlex.quote(root)} && sh ./{LAUNCHER} {action}", timeout=60)
    try:
        data = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except ValueError:
        data = {}
    return rc, data if isinstance(data, dict) else {}, err


def _has_launcher(bs: BootServer, root: str) -> bool:
    try:
        bs.sftp.stat(f"{root}/{LAUNCHER}")
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _sftp_error(bs, f"cannot stat {root}", exc) from None


def _agent_log_tail(bs: BootServer, root: str) -> str:
    _, out, _ = bs.run(f"tail -n 5 {shlex.quote(root + '/agent.log')} 2>/dev/null")
    return out.strip()


def push(
    site: Site,
    rack: str,
    selected: list[Node],
    store: StateStore,
    events: EventLog,
    *,
    server: str | None = None,
    http_port: int | None = None,
    interface: str | None = None,
    dhcp: bool = True,
    assets_root: Path | None = None,
    remote_dir: str | None = None,
    accept_new: bool = False,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Upload the rack's bundle and (re)start its agent; returns what was done."""
    if site.networks is None or site.networks.netboot is None:
        raise InputError("networks.netboot: the inventory has no netboot section (networks.netboot.server)")
    target = boot_target(site, rack)
    server = server or target.host
    try:
        ipaddress.ip_address(server)
    except ValueError:
        raise InputError(
            f"rack {rack}: boot_server.host {target.host!r} is not an IP address; pass --server with the "
            "address this rack's nodes reach the boot server on"
        ) from None
    port = site.networks.netboot.http_port if http_port is None else http_port
    with session(target, accept_new, timeout) as bs:
        python = _python(bs)
        root = remote_dir_for(bs, remote_dir)
        iface = interface or (_remote_interface(bs, server) if dhcp else None)
        bundle = build_bundle(
            site,
            rack,
            selected,
            store,
            root=root,
            python=python,
            server=server,
            http_port=port,
            interface=iface,
            dhcp=dhcp,
            assets_root=assets_root,
        )
        for w in bundle.warnings:
            log.warning("rack %s: %s", rack, w)
        merged = 0
        if _has_launcher(bs, root):
            merged += pull_events(bs, root, site, events)  # nothing is lost across the restart
            rc, out, err = _launcher_cmd(bs, root, "stop")
            if rc != 0:
                raise bs.fail("cannot stop the running agent", out.get("error") or err)
        for sub in ("", f"/{remote_rel(REMOTE.configs_dir)}", "/assets", "/run"):
            _ensure_private_dir(bs, root + sub)
        zip_bytes = agent_zip()
        large = {**bundle.large}
        remote_sums = _remote_sha256(bs, root, [*large, AGENT_ZIP])
        uploaded, unchanged = [], []
        if remote_sums.get(AGENT_ZIP) == _sha256_bytes(zip_bytes):
            unchanged.append(AGENT_ZIP)
        else:
            _upload(bs, f"{root}/{AGENT_ZIP}", zip_bytes, 0o600)
            uploaded.append(AGENT_ZIP)
        for rel, local in large.items():
            if remote_sums.get(rel) == sha256_file(local):
                unchanged.append(rel)
            else:
                _upload(bs, f"{root}/{rel}", local, 0o600)
                uploaded.append(rel)
        for rel, (data, mode) in bundle.files.items():
            _upload(bs, f"{root}/{rel}", data, mode)
            uploaded.append(rel)
        removed = _remove_stale(bs, root, bundle)
        rc, status, err = _launcher_cmd(bs, root, "start")
        if rc != 0 or not status.get("running"):
            reason = status.get("error") or err or _agent_log_tail(bs, root)
            raise bs.fail("the netboot agent did not start", str(reason))
        merged += pull_events(bs, root, site, events)
    host, bound = status.get("http") or [server, port]
    return {
        "rack": rack,
        "boot_server": f"{target.user}@{target.host}:{target.port}",
        "remote_dir": root,
        "uploaded": uploaded,
        "unchanged": unchanged,
        "removed": removed,
        "http": f"http://{host}:{bound}",
        "dhcp": dhcp,
        "interface": iface,
        "agent_pid": status.get("pid"),
        "nodes": bundle.answers,
        "warnings": bundle.warnings,
        "events_merged": merged,
    }


def _remove_stale(bs: BootServer, root: str, bundle: Bundle) -> list[str]:
    """Configs of nodes no longer installing here, and the dnsmasq files when DHCP is off."""
    removed = []
    for sub in (remote_rel(REMOTE.configs_dir), "run"):
        try:
            names = bs.sftp.listdir(f"{root}/{sub}")
        except OSError:
            continue
        for name in names:
            rel = f"{sub}/{name}"
            keep = rel in bundle.files or (sub == "run" and not name.endswith((".conf", ".sh", ".json")))
            if not keep:
                try:
                    bs.sftp.remove(f"{root}/{rel}")
                    removed.append(rel)
                except OSError as exc:
                    raise _sftp_error(bs, f"cannot remove {root}/{rel}", exc) from None
    return removed


def _agent_command(
    site: Site,
    rack: str,
    events: EventLog,
    command: str,
    remote_dir: str | None,
    accept_new: bool,
    timeout: float,
) -> dict[str, Any]:
    """Run the remote launcher's ``command`` (status | stop), pulling the agent's events
    into the local log before and, for stop, after it."""
    target = boot_target(site, rack)
    with session(target, accept_new, timeout) as bs:
        root = remote_dir_for(bs, remote_dir)
        result: dict[str, Any] = {
            "rack": rack,
            "boot_server": f"{target.user}@{target.host}:{target.port}",
            "remote_dir": root,
        }
        if not _has_launcher(bs, root):
            return {**result, "running": False, "state": "not-pushed", "events_merged": 0}
        merged = pull_events(bs, root, site, events)
        rc, status, err = _launcher_cmd(bs, root, command)
        if rc != 0:
            raise bs.fail(
                f"cannot {'query' if command == 'status' else command} the agent", status.get("error") or err
            )
        if command == "stop":
            merged += pull_events(bs, root, site, events)
            return {
                **result,
                "running": False,
                "state": "stopped",
                "pid": status.get("pid"),
                "events_merged": merged,
            }
    keep = ("running", "state", "pid", "http", "dnsmasq_pid", "error", "started")
    return {**result, **{k: status.get(k) for k in keep if k in status}, "events_merged": merged}


def remote_status(
    site: Site,
    rack: str,
    events: EventLog,
    *,
    remote_dir: str | None = None,
    accept_new: bool = False,
    timeout: float = 15.0,
) -> dict[str, Any]:
    return _agent_command(site, rack, events, "status", remote_dir, accept_new, timeout)


def remote_stop(
    site: Site,
    rack: str,
    events: EventLog,
    *,
    remote_dir: str | None = None,
    accept_new: bool = False,
    timeout: float = 15.0,
) -> dict[str, Any]:
    return _agent_command(site, rack, events, "stop", remote_dir, accept_new, timeout)
