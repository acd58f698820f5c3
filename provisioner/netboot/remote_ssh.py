"""SSH transport to a rack's boot server: who it is, how its host key is checked, files and commands.

Host keys are verified (``~/.ssh/known_hosts`` and ``known_hosts`` beside the inventory);
an unknown key is refused unless ``accept_new`` records it in the inventory's file, and a
changed key is always refused. Uploads are atomic (temp name, then rename) into private
directories (0700). Nothing here knows what is uploaded (``remote_payload``) or why
(``remote``).
"""

from __future__ import annotations

import logging
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ..errors import InputError, OperationError
from ..inventory.model import Site

log = logging.getLogger("provisioner.netboot.remote")

KNOWN_HOSTS = "known_hosts"  # beside the inventory, committed with it
DEFAULT_REMOTE_DIR = ".provisioner/{cluster}/{rack}"  # relative to the login's home


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


@contextmanager
def session(target: BootTarget, accept_new: bool = False, timeout: float = 15.0) -> Iterator[BootServer]:
    with BootServer(target, accept_new, timeout) as bs:
        yield bs
