"""Network boot for a rack on its own L2 segment: the service runs on the rack's boot server.

The tool's own dnsmasq cannot answer DHCP on another segment, so ``provisioner netboot
push --rack R`` connects to ``racks[R].boot_server`` over SSH (paramiko) and uploads a
self-contained bundle into a private directory there (default
``~/.provisioner/<cluster>/<rack>/``, mode 0700, files 0600):

- ``manifest.json``: every answer decided here (``/boot.ipxe``, each node's install or
  boot-from-disk script, MAC/UUID/IP), for the rack's nodes only;
- ``configs/<node>.yaml``: the machine configs of nodes that are to install (secret);
- ``run/dnsmasq.conf`` + lease hook + MAC map: DHCP reservations for the rack's nodes;
- ``assets/``: Talos kernel and initramfs, uploaded only when the remote sha256 differs;
- ``agent.zip`` + ``netboot.sh``: the stdlib-only agent (``remote_agent``) and its launcher.

Host keys are verified (``~/.ssh/known_hosts`` and ``known_hosts`` beside the inventory);
an unknown key is refused unless ``accept_new`` records it in the inventory's file, and a
changed key is always refused. Events the agent writes on the boot server are pulled back
into the local event log by ``push``, ``status`` and ``stop``.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import logging
import posixpath
import shlex
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netaddr
import paramiko

from ..errors import InputError, OperationError
from ..events import EventLog
from ..fsutil import atomic_write, locked, private_dir
from ..inventory.model import Node, Site
from ..state import StateStore
from . import dnsmasq, ipxe
from .assets import ASSET_FILES, asset_set, sha256_file

log = logging.getLogger(__name__)

KNOWN_HOSTS = "known_hosts"  # beside the inventory, committed with it
DEFAULT_REMOTE_DIR = ".provisioner/{cluster}/{rack}"  # relative to the login's home
LAUNCHER = "netboot.sh"
AGENT_ZIP = "agent.zip"
MIN_PYTHON = (3, 10)
_PKG = Path(__file__).resolve().parents[1]
# The agent's whole world: stdlib-only modules, so the boot server needs no PyPI package.
AGENT_MODULES = (
    "__init__.py",
    "events.py",
    "fsutil.py",
    "netboot/__init__.py",
    "netboot/childguard.py",
    "netboot/http.py",
    "netboot/leasehook.py",
    "netboot/remote_agent.py",
)


@dataclass(frozen=True)
class BootTarget:
    cluster: str
    rack: str
    host: str
    user: str
    port: int
    key: Path | None
    known_hosts: Path  # the inventory's own file (may not exist yet)

    @property
    def label(self) -> str:
        return f"boot server {self.user}@{self.host}:{self.port} (rack {self.rack})"


def boot_target(site: Site, rack: str) -> BootTarget:
    """The rack's boot server, or InputError (exit 2) naming what is missing."""
    site.select((rack,))  # unknown rack -> InputError listing the known ones
    entry = next((r for r in site.racks if r.name == rack), None)
    if entry is None or entry.boot_server is None:
        raise InputError(
            f"rack {rack} has no boot_server in the inventory; its nodes are served by the local "
            "netboot service (`provisioner netboot serve`)"
        )
    bs = entry.boot_server
    key = None
    if bs.key:
        key = Path(bs.key).expanduser()
        if not key.is_absolute():
            key = site.base_dir / key
        if not key.is_file():
            raise InputError(f"racks[{rack}].boot_server.key: {key} does not exist or is not a file")
    return BootTarget(site.cluster.name, rack, bs.host, bs.user, bs.port, key, site.base_dir / KNOWN_HOSTS)


# --- SSH ------------------------------------------------------------------------------------
class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(f"host key for {name} is not known")
        self.name, self.key = name, key


class _Reject(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """First contact, asked for explicitly: record the key in the inventory's known_hosts.
    Only reached for a host with no key at all; a changed key never gets here."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        try:
            with open(self.path, "a", encoding="ascii") as fh:
                fh.write(line)
        except OSError as exc:
            raise OperationError(f"cannot record the host key in {self.path}: {exc.strerror}") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning(
            "accepted new host key for %s: %s %s (saved in %s)",
            hostname,
            key.get_name(),
            key.fingerprint,
            self.path,
        )


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise InputError(
            f"SSH key {path} is encrypted; load it into ssh-agent and leave boot_server.key unset"
        ) from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise InputError(f"SSH key {path} is not a private key paramiko can read: {exc}") from None


class BootServer:
    """A connected session: ``run`` shell commands, ``sftp`` files. A context manager."""

    def __init__(self, target: BootTarget, accept_new: bool = False, timeout: float = 15.0) -> None:
        self.target = target
        self.accept_new = accept_new
        self.timeout = timeout
        self.client = paramiko.SSHClient()
        self._sftp: paramiko.SFTPClient | None = None

    def connect(self) -> BootServer:
        t = self.target
        pkey = _load_key(t.key) if t.key else None
        client = self.client
        client.load_system_host_keys()  # ~/.ssh/known_hosts, if any
        if t.known_hosts.is_file():
            try:
                client.load_host_keys(str(t.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise InputError(f"{t.known_hosts}: cannot read known hosts: {exc}") from None
        client.set_missing_host_key_policy(_AcceptNew(t.known_hosts) if self.accept_new else _Reject())
        try:
            client.connect(
                t.host,
                port=t.port,
                username=t.user,
                pkey=pkey,
                allow_agent=pkey is None,
                look_for_keys=pkey is None,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
            )
        except _UnknownHostKey as exc:
            client.close()
            raise OperationError(
                f"{t.label}: host key {exc.key.get_name()} {exc.key.fingerprint} is not known "
                f"(not in ~/.ssh/known_hosts or {t.known_hosts}); check it on the boot server "
                "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and rerun with --accept-new-host-key "
                f"to record it in {t.known_hosts}"
            ) from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise OperationError(
                f"{t.label}: host key CHANGED (got {exc.key.get_name()} {exc.key.fingerprint}, "
                f"expected {exc.expected_key.fingerprint}); refusing to connect. If the boot server "
                "was reinstalled, remove its old entry from known_hosts"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            how = f"key {t.key}" if t.key else "the SSH agent and default keys"
            raise OperationError(f"{t.label}: authentication failed with {how}: {exc}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            )
            raise OperationError(f"{t.label}: cannot connect: {reason}") from None
        return self

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self.client.close()

    def __enter__(self) -> BootServer:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (OSError, paramiko.SSHException) as exc:
                raise OperationError(f"{self.target.label}: SFTP unavailable: {exc}") from None
        return self._sftp

    def run(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        try:
            _, out, err = self.client.exec_command(command, timeout=timeout)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            return out.channel.recv_exit_status(), stdout, stderr
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            raise OperationError(f"{self.target.label}: remote command failed: {exc}") from None

    def fail(self, what: str, detail: str = "") -> OperationError:
        return OperationError(
            f"{self.target.label}: {what}" + (f": {detail.strip()}" if detail.strip() else "")
        )


def _sftp_error(bs: BootServer, what: str, exc: BaseException) -> OperationError:
    return bs.fail(what, getattr(exc, "strerror", None) or str(exc))


def remote_dir_for(bs: BootServer, option: str | None) -> str:
    """Absolute remote bundle directory: ``option`` (relative to the home) or the default."""
    t = bs.target
    rel = option or DEFAULT_REMOTE_DIR.format(cluster=t.cluster, rack=t.rack)
    if posixpath.isabs(rel):
        return posixpath.normpath(rel)
    try:
        home = bs.sftp.normalize(".")
    except OSError as exc:
        raise _sftp_error(bs, "cannot find the home directory", exc) from None
    return posixpath.normpath(posixpath.join(home, rel))


def _ensure_private_dir(bs: BootServer, path: str) -> None:
    """mkdir -p, new components 0700; the directory itself is always made 0700."""
    sftp = bs.sftp
    cur = "/"
    for part in path.strip("/").split("/"):
        cur = posixpath.join(cur, part)
        try:
            st = sftp.stat(cur)
        except FileNotFoundError:
            try:
                sftp.mkdir(cur, 0o700)
            except OSError as exc:
                raise _sftp_error(bs, f"cannot create {cur}", exc) from None
            continue
        except OSError as exc:
            raise _sftp_error(bs, f"cannot stat {cur}", exc) from None
        if not stat.S_ISDIR(st.st_mode or 0):
            raise bs.fail(f"{cur} exists and is not a directory")
    try:
        sftp.chmod(path, 0o700)
    except OSError as exc:
        raise _sftp_error(bs, f"cannot chmod {path}", exc) from None


def _upload(bs: BootServer, path: str, source: bytes | Path, mode: int) -> None:
    """Write to a temp name (mode set before any content lands), then rename over ``path``."""
    sftp = bs.sftp
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.part")
    try:
        with sftp.open(tmp, "wb") as fh:
            fh.chmod(mode)
            fh.set_pipelined(True)
            if isinstance(source, bytes):
                fh.write(source)
            else:
                with open(source, "rb") as src:
                    while chunk := src.read(1 << 20):
                        fh.write(chunk)
        sftp.posix_rename(tmp, path)
    except OSError as exc:
        raise _sftp_error(bs, f"upload of {path} failed", exc) from None


# --- the bundle -----------------------------------------------------------------------------
@dataclass
class Bundle:
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # relpath -> data, mode
    large: dict[str, Path] = field(default_factory=dict)  # relpath -> local file (sha256-skipped)
    warnings: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # node -> install | local-disk


def agent_zip() -> bytes:
    """The agent and its modules, byte-identical for identical sources (so re-pushes skip it)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in AGENT_MODULES:
            info = zipfile.ZipInfo(f"provisioner/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (_PKG / rel).read_bytes())
    return buf.getvalue()


def _launcher(cluster: str, rack: str, python: str) -> str:
    return (
        "#!/bin/sh\n"
        f"# provisioner netboot agent for rack {rack} of cluster {cluster}; written by "
        "`provisioner netboot push`.\n"
        "# usage: sh netboot.sh start|stop|status   (prints JSON)\n"
        'here=$(cd "$(dirname "$0")" && pwd) || exit 1\n'
        'PYTHONPATH="$here/agent.zip"\nexport PYTHONPATH\numask 077\n'
        f'exec {shlex.quote(python)} -m provisioner.netboot.remote_agent --dir "$here" "$@"\n'
    )


def _lease_hook(root: str, python: str) -> str:
    env = {
        "PROVISIONER_EVENTS": f"{root}/events.jsonl",
        "PROVISIONER_NODEMAP": f"{root}/run/nodes.json",
        "PYTHONPATH": f"{root}/{AGENT_ZIP}",
    }
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    return (
        f"#!/bin/sh\n# dnsmasq lease events -> the agent's event log\n{exports}"
        f'exec {shlex.quote(python)} -m provisioner.netboot.leasehook "$@"\n'
    )


def rack_site(site: Site, server: str, http_port: int, interface: str | None) -> Site:
    """The site as seen from the boot server: its address and port, its interface."""
    assert site.networks is not None and site.networks.netboot is not None
    nb = site.networks.netboot.model_copy(
        update={"server": netaddr.IPAddress(server), "http_port": http_port, "interface": interface}
    )
    return site.model_copy(update={"networks": site.networks.model_copy(update={"netboot": nb})})


def build_bundle(
    site: Site,
    rack: str,
    selected: list[Node],
    store: StateStore,
    *,
    root: str,
    python: str,
    server: str,
    http_port: int,
    interface: str | None,
    dhcp: bool,
    assets_root: Path | None,
) -> Bundle:
    rsite = rack_site(site, server, http_port, interface)
    endpoint = ipxe.Endpoint(server, http_port)
    rack_nodes = [n for n in site.nodes if n.rack == rack]
    chosen = {n.name for n in selected}
    bundle = Bundle()
    entries = []
    for n in rack_nodes:
        if n.name not in chosen or store.is_installed(n.name):
            reason = "not selected" if n.name not in chosen else "installed"
            answer, script = "local-disk", ipxe.local_disk_script(n)
        else:
            reason, answer, script = "", "install", ipxe.install_script(rsite, n, endpoint)
            cfg = site.state_dir / "configs" / f"{n.name}.yaml"
            try:
                bundle.files[f"configs/{n.name}.yaml"] = (cfg.read_bytes(), 0o600)
            except FileNotFoundError:
                bundle.warnings.append(
                    f"{n.name}: no machine config in {cfg.parent} (run `provisioner configs generate`)"
                )
        bundle.answers[n.name] = answer
        entries.append(
            {
                "name": n.name,
                "mac": n.boot.mac,
                "uuid": n.uuid,
                "ip": str(n.ip),
                "answer": answer,
                "reason": reason,
                "script": script,
            }
        )
    manifest = {
        "cluster": site.cluster.name,
        "rack": rack,
        "http": {"host": server, "port": http_port},
        "dhcp": dhcp,
        "boot_ipxe": ipxe.boot_script(endpoint),
        "asset_files": list(ASSET_FILES),
        "nodes": entries,
    }
    bundle.files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True).encode(), 0o600)
    bundle.files[LAUNCHER] = (_launcher(site.cluster.name, rack, python).encode(), 0o700)
    if dhcp:
        paths = dnsmasq.Paths(Path(root) / "run")
        conf = dnsmasq.render(rsite, paths, rack_nodes, interface)
        bundle.files["run/dnsmasq.conf"] = (conf.encode(), 0o600)
        bundle.files["run/leasehook.sh"] = (_lease_hook(root, python).encode(), 0o700)
        node_map = {n.boot.mac: n.name for n in rack_nodes}
        bundle.files["run/nodes.json"] = (json.dumps(node_map, indent=1).encode(), 0o600)
    aset = asset_set(site, assets_root)
    for name in ASSET_FILES:
        if aset.path(name).is_file():
            bundle.large[f"assets/{name}"] = aset.path(name)
        else:
            bundle.warnings.append(
                f"Talos asset {aset.path(name)} is missing (`provisioner assets fetch` or `assets import`)"
            )
    return bundle


# --- events ---------------------------------------------------------------------------------
def _cursor_path(site: Site, rack: str) -> Path:
    return private_dir(site.state_dir / "netboot-remote") / f"{rack}.json"


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
        path = f"{root}/events.jsonl"
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


@contextmanager
def session(target: BootTarget, accept_new: bool = False, timeout: float = 15.0) -> Iterator[BootServer]:
    with BootServer(target, accept_new, timeout) as bs:
        yield bs


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
        for sub in ("", "/configs", "/assets", "/run"):
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


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remove_stale(bs: BootServer, root: str, bundle: Bundle) -> list[str]:
    """Configs of nodes no longer installing here, and the dnsmasq files when DHCP is off."""
    removed = []
    for sub in ("configs", "run"):
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
