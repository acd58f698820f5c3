"""The sushy-tools Redfish emulator serving ``Machine`` objects: a stand-in for hardware BMCs.

sushy-tools ships drivers for libvirt, Nova and Ironic; ``MachineSystemsDriver`` is
our own driver behind its Flask application, so every HTTP request goes through
sushy-tools' real routes, templates and basic-auth middleware. Each machine is one
ComputerSystem whose Id is the node name.

sushy-tools drops ``BootSourceOverrideEnabled`` (its libvirt driver can only do
"Continuous") and hard-codes "Continuous" in its template; the driver reads the field
from the PATCH and a response hook reports the machine's real value, so one-time boot
overrides can be tested. The same hooks inject per-request latency and faults.

What differs from running sushy-tools as shipped, and why (each keeps the emulator a
faithful stand-in while not making it the bottleneck of a 100-BMC benchmark):

- HTTP/1.1 keep-alive. Werkzeug's development server closes every connection, so each
  request cost a client a new TCP connection and TLS handshake, which a real BMC's web
  server does not impose. ``_KeepAliveHandler`` reads the request body before the
  application runs, so the next request on the connection is never mistaken for it.
- Verified credentials are remembered. sushy-tools checks the bcrypt hash of the
  Authorization header on every request; a BMC does not redo a password hash per
  request (it has sessions, or caches). A wrong password is still checked (and
  refused) every time, and a changed auth file is read again.
- One accept loop per process for all ports, and the TLS handshake in the
  connection's own thread, instead of one polling thread per port.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import json
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import flask
from sushy_tools import error as sushy_error
from sushy_tools.emulator import auth_basic as sushy_auth_basic
from sushy_tools.emulator import main as sushy_main
from sushy_tools.emulator.resources import indicators as sushy_indicators
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from ..fsutil import atomic_write
from .faults import Fault, FaultInjector
from .machine import BootTarget, Machine

log = logging.getLogger("provisioner.lab.redfish-bmc-emulator")

_TARGETS: dict[str, BootTarget] = {"Pxe": "pxe", "Hdd": "disk"}
_TARGET_NAMES = {v: k for k, v in _TARGETS.items()}


class MachineSystemsDriver(AbstractSystemsDriver):
    """sushy-tools systems driver whose systems are ``Machine`` objects (stand-ins or VMs)."""

    machines: dict[str, Machine] = {}
    _per_port: dict[frozenset[str], dict[str, Machine]] = {}

    @classmethod
    def initialize(cls, config: Any, logger: Any, *args: Any, **kwargs: Any) -> type[MachineSystemsDriver]:
        cls._config = config
        cls._logger = logger
        cls.machines = dict(kwargs.get("machines", {}))
        cls._per_port = {}
        return cls

    def _visible(self) -> dict[str, Machine]:
        """The machines of the BMC (port) this request came in on."""
        names = flask.request.environ.get(_ENVIRON_KEY) if flask.has_request_context() else None
        if names is None:
            return self.machines
        visible = self._per_port.get(names)
        if visible is None:  # the machines never change: one lookup table per port
            visible = self._per_port[names] = {n: m for n, m in self.machines.items() if n in names}
        return visible

    def _get(self, identity: str) -> Machine:
        names = flask.request.environ.get(_ENVIRON_KEY) if flask.has_request_context() else None
        machine = self.machines.get(identity)
        if machine is not None and (names is None or identity in names):
            return machine
        for name, m in self._visible().items():
            if m.identity.uuid == identity:
                raise sushy_error.AliasAccessError(name)
        raise sushy_error.NotFound(f"system {identity} not found on this emulated BMC")

    @property
    def driver(self) -> str:
        return "<provisioner-lab-machines>"

    @property
    def systems(self) -> list[str]:
        return list(self._visible())

    def uuid(self, identity: str) -> str:
        return self._get(identity).identity.uuid

    def name(self, identity: str) -> str:
        return self._get(identity).name

    def get_power_state(self, identity: str) -> str:
        return "On" if self._get(identity).power_state() else "Off"

    def set_power_state(self, identity: str, state: str) -> None:
        m = self._get(identity)
        if state in ("On", "ForceOn"):
            m.power_on()
        elif state == "ForceOff":
            m.power_off(hard=True)
        elif state == "GracefulShutdown":
            m.power_off(hard=False)
        elif state in ("ForceRestart", "GracefulRestart"):
            if not m.power_state():
                raise sushy_error.BadRequest(f"cannot {state} system {identity}: it is powered off")
            m.reset()
        elif state == "Nmi":
            pass
        else:
            raise sushy_error.BadRequest(f"reset type {state} is not supported")

    def get_boot_device(self, identity: str) -> str:
        return _TARGET_NAMES[self._get(identity).boot_device().device]

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        device = _TARGETS.get(boot_source)
        if device is None:
            raise sushy_error.BadRequest(f"boot source {boot_source} is not supported (Pxe or Hdd)")
        enabled = ((flask.request.get_json(silent=True) or {}).get("Boot") or {}).get(
            "BootSourceOverrideEnabled"
        )
        m = self._get(identity)
        current = m.boot_device()
        persistent = current.persistent if enabled is None else enabled == "Continuous"
        if enabled not in (None, "Once", "Continuous"):
            raise sushy_error.BadRequest(f"BootSourceOverrideEnabled {enabled} is not supported")
        m.set_boot_device(device, persistent, current.uefi)

    def get_boot_mode(self, identity: str) -> str:
        return "UEFI" if self._get(identity).boot_device().uefi else "Legacy"

    def set_boot_mode(self, identity: str, boot_mode: str) -> None:
        if boot_mode not in ("UEFI", "Legacy"):
            raise sushy_error.BadRequest(f"boot mode {boot_mode} is not supported")
        m = self._get(identity)
        current = m.boot_device()
        m.set_boot_device(current.device, current.persistent, boot_mode == "UEFI")

    def get_nics(self, identity: str) -> list[dict[str, str]]:
        return [{"id": mac.replace(":", ""), "mac": mac} for mac in self._get(identity).identity.macs]


_ENVIRON_KEY = "provisioner.lab.systems"


class _PortSystems:
    """WSGI wrapper for one port: the request only sees that emulated BMC's systems."""

    def __init__(self, app: Any, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ[_ENVIRON_KEY] = self.names
        return self.app(environ, start_response)


class _MemoryIndicators(sushy_indicators.StaticDriver):
    """sushy-tools' indicator LEDs, kept in a dict.

    Its own driver keeps them in an SQLite-backed dict opened on every access (with
    retries), about a third of the application's time per ComputerSystem GET.
    """

    def __init__(self, config: Any, logger: Any) -> None:
        self._config, self._logger = config, logger
        self._indicators = dict(config.get("SUSHY_EMULATOR_INDICATOR_LEDS", {}))


class _LabApplication(sushy_main.Application):
    """sushy-tools' application with our systems driver instead of libvirt/Nova/Ironic."""

    @property
    def systems(self) -> MachineSystemsDriver:
        return self.config["PROVISIONER_SYSTEMS_DRIVER"]  # type: ignore[no-any-return]

    @property
    def indicators(self) -> _MemoryIndicators:
        return self.config["PROVISIONER_INDICATORS"]  # type: ignore[no-any-return]


def _is_mutating(method: str) -> bool:
    return method in ("POST", "PATCH", "PUT", "DELETE")


def _before_request() -> Any:
    faults: FaultInjector = sushy_main.app.config["PROVISIONER_FAULTS"]
    req = flask.request
    fault = faults.decide(mutating=_is_mutating(req.method))
    if faults.spec.latency > 0:
        time.sleep(faults.spec.latency)  # one thread per request: other requests proceed
    if fault is Fault.ERROR:
        log.info("Redfish BMC emulator: injected error for %s %s", req.method, req.path)
        body = sushy_main._render_error("injected fault: the emulated BMC is busy")
        return flask.Response(json.dumps(body), status=503, mimetype="application/json")
    if fault is Fault.TIMEOUT:
        log.info("Redfish BMC emulator: injected timeout for %s %s", req.method, req.path)
        time.sleep(sushy_main.app.config["PROVISIONER_HANG"])
        return flask.Response(status=504)
    if fault is Fault.NOOP:
        log.info("Redfish BMC emulator: injected silent no-op for %s %s", req.method, req.path)
        return flask.Response(status=204)
    return None


def _after_request(response: flask.Response) -> flask.Response:
    """Report what sushy-tools' template cannot: one-time overrides and the SMBIOS identity."""
    req = flask.request
    parts = req.path.strip("/").split("/")
    if req.method != "GET" or response.status_code != 200 or len(parts) != 4 or parts[2] != "Systems":
        return response
    driver: MachineSystemsDriver = sushy_main.app.config["PROVISIONER_SYSTEMS_DRIVER"]
    machine = driver.machines.get(parts[3])
    if machine is None:
        return response
    body = json.loads(response.get_data())
    boot = machine.boot_device()
    body.setdefault("Boot", {})["BootSourceOverrideEnabled"] = "Continuous" if boot.persistent else "Once"
    body["Boot"]["BootSourceOverrideEnabled@Redfish.AllowableValues"] = ["Once", "Continuous"]
    body["Manufacturer"] = machine.identity.vendor
    body["Model"] = machine.identity.model
    body["SerialNumber"] = machine.identity.serial
    response.set_data(json.dumps(body))
    return response


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_material(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A private CA and a server certificate it signed, for the emulator's HTTPS.

    Clients must be given ``ca.pem`` (or disable verification) to talk to the emulator,
    which is exactly the situation of a BMC with a site-issued or self-signed certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "provisioner lab BMC emulator CA (stand-in)")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    atomic_write(files.ca, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write(files.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        mode=0o600,
    )
    return files


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """The bcrypt user file sushy-tools' basic-auth middleware reads (0600: it is a secret).

    Cost 4, the bcrypt minimum: the emulator checks it on every request and these
    credentials only guard loopback test traffic.
    """
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    atomic_write(path, f"{username}:{digest}\n", mode=0o600)


_IDLE_TIMEOUT = 60.0  # seconds a keep-alive connection may sit idle before the BMC closes it


class _KeepAliveHandler(WSGIRequestHandler):
    """Werkzeug's handler, keeping HTTP/1.1 connections open between requests.

    Werkzeug always answers ``Connection: close`` because http.server cannot skip a
    request body the application left unread. Here the body (``Content-Length``) is
    read before the application runs and handed to it from memory, so the connection
    is always positioned at the next request. Requests with a chunked or
    ``Expect: 100-continue`` body keep werkzeug's behaviour (the connection is closed).
    """

    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    _keep_alive = False

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            # The handshake runs here, in this connection's thread, not in the accept loop.
            try:
                self.connection.do_handshake()
            except OSError as exc:  # ssl.SSLError included: a client refusing our certificate
                log.debug("Redfish BMC emulator: TLS handshake with %s failed: %s", self.client_address, exc)
                return
        super().handle()

    def run_wsgi(self) -> None:
        length = self.headers.get("Content-Length", "0")
        self._keep_alive = (
            "Transfer-Encoding" not in self.headers
            and "Expect" not in self.headers
            and length.isdigit()
            and not self.close_connection
        )
        if not self._keep_alive:
            super().run_wsgi()
            return
        connection_stream = self.rfile
        self.rfile = io.BytesIO(connection_stream.read(int(length)))  # type: ignore[assignment]
        try:
            super().run_wsgi()
        finally:
            self.rfile = connection_stream

    def send_header(self, keyword: str, value: str) -> None:
        if self._keep_alive and keyword.lower() == "connection" and value.lower() == "close":
            return  # the body was consumed: the connection can serve the next request
        super().send_header(keyword, value)

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        if logging.getLogger("werkzeug").isEnabledFor(logging.INFO):
            super().log_request(*args, **kwargs)


class _EmulatorServer(ThreadedWSGIServer):
    """One emulated BMC's HTTP(S) port; TLS is wrapped per connection, in its thread."""

    block_on_close = False  # keep-alive connections must not hold up stop()

    def __init__(self, address: str, port: int, app: Any, tls: ssl.SSLContext | None) -> None:
        super().__init__(address, port, app, _KeepAliveHandler)
        self.ssl_context = tls  # werkzeug reports https to the application from this
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()
        # Headers and body go out as separate writes: without this, Nagle's algorithm
        # holds the body back until the client's delayed ACK (~40 ms) on a kept connection.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr


_verified: dict[tuple[str, int, str, bytes], dict[str, str]] = {}
_verified_lock = threading.Lock()
_bcrypt_authenticate = sushy_auth_basic.authenticate


def _authenticate_cached(auth_file: str, username: str, password: bytes) -> dict[str, str]:
    """sushy-tools' bcrypt check, done once per (auth file version, user, password).

    Only successes are remembered, keyed by a SHA-256 of the password, and the key
    includes the auth file's modification time: a changed file is checked afresh.
    """
    try:
        version = os.stat(auth_file).st_mtime_ns
    except OSError:
        version = -1
    key = (auth_file, version, username, hashlib.sha256(password).digest())
    with _verified_lock:
        found = _verified.get(key)
    if found is not None:
        return dict(found)
    result = _bcrypt_authenticate(auth_file, username, password)
    with _verified_lock:
        _verified[key] = dict(result)
    return result


class RedfishEmulator:
    """sushy-tools' app on one or more ports of one process (the app is a module singleton).

    Each port is one emulated BMC and shows only its own machines (``services`` maps a
    port to machine names); a port with several machines is a multi-system BMC.
    """

    def __init__(
        self,
        machines: dict[str, Machine],
        address: str,
        services: list[tuple[int, frozenset[str]]],
        auth_file: Path,
        tls: TlsFiles | None,
        faults: FaultInjector,
        hang: float = 10.0,
    ) -> None:
        app = sushy_main.app
        if not isinstance(app, _LabApplication):
            app.__class__ = _LabApplication
            app.before_request(_before_request)
            app.after_request(_after_request)
            sushy_auth_basic.authenticate = _authenticate_cached
        driver_cls = MachineSystemsDriver.initialize(app.config, app.logger, machines=machines)
        app.configure(
            extra_config={
                "SUSHY_EMULATOR_AUTH_FILE": str(auth_file),
                "PROVISIONER_SYSTEMS_DRIVER": driver_cls(),
                "PROVISIONER_FAULTS": faults,
                "PROVISIONER_HANG": hang,
                "PROVISIONER_INDICATORS": _MemoryIndicators(app.config, app.logger),
            }
        )
        # Compile sushy-tools' templates now: otherwise the first requests, arriving
        # together, each compile the same template (a real BMC's web server is warm).
        for template in app.jinja_env.list_templates():
            app.jinja_env.get_template(template)
        self.faults = faults
        self._servers: list[_EmulatorServer] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        ssl_context = None
        if tls is not None:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(str(tls.cert), str(tls.key))
        for port, names in services:
            self._servers.append(_EmulatorServer(address, port, _PortSystems(app, names), ssl_context))
        scheme = "https" if tls else "http"
        log.info(
            "Redfish BMC emulator (sushy-tools, stand-in for hardware BMCs): %d systems on %s://%s ports %s",
            len(machines),
            scheme,
            address,
            ",".join(str(s.server_port) for s in self._servers),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="redfish-emulator-accept", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        """Accept connections on every port from one thread; each connection gets its own."""
        with selectors.DefaultSelector() as selector:
            for server in self._servers:
                selector.register(server.socket, selectors.EVENT_READ, server)
            while not self._stop.is_set():
                for key, _events in selector.select(timeout=0.2):
                    key.data._handle_request_noblock()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for server in self._servers:
            server.server_close()
