"""The sushy-tools Redfish emulator serving ``Machine`` objects: a stand-in for hardware BMCs.

sushy-tools ships drivers for libvirt, Nova and Ironic; ``MachineSystemsDriver`` is
our own driver behind its Flask application, so every HTTP request goes through
sushy-tools' real routes, templates and basic-auth middleware. Each machine is one
ComputerSystem whose Id is the node name.

sushy-tools drops ``BootSourceOverrideEnabled`` (its libvirt driver can only do
"Continuous") and hard-codes "Continuous" in its template; the driver reads the field
from the PATCH and a response hook reports the machine's real value, so one-time boot
overrides can be tested. The same hooks inject per-request latency and faults.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import flask
from sushy_tools import error as sushy_error
from sushy_tools.emulator import main as sushy_main
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver
from werkzeug.serving import BaseWSGIServer, make_server

from ..fsutil import atomic_write
from .faults import Fault, FaultInjector
from .machine import BootTarget, Machine

log = logging.getLogger("provisioner.lab.redfish-bmc-emulator")

_TARGETS: dict[str, BootTarget] = {"Pxe": "pxe", "Hdd": "disk"}
_TARGET_NAMES = {v: k for k, v in _TARGETS.items()}


class MachineSystemsDriver(AbstractSystemsDriver):
    """sushy-tools systems driver whose systems are ``Machine`` objects (stand-ins or VMs)."""

    machines: dict[str, Machine] = {}

    @classmethod
    def initialize(cls, config: Any, logger: Any, *args: Any, **kwargs: Any) -> type[MachineSystemsDriver]:
        cls._config = config
        cls._logger = logger
        cls.machines = dict(kwargs.get("machines", {}))
        return cls

    def _visible(self) -> dict[str, Machine]:
        """The machines of the BMC (port) this request came in on."""
        names = flask.request.environ.get(_ENVIRON_KEY) if flask.has_request_context() else None
        if names is None:
            return self.machines
        return {n: m for n, m in self.machines.items() if n in names}

    def _get(self, identity: str) -> Machine:
        visible = self._visible()
        machine = visible.get(identity)
        if machine is not None:
            return machine
        for name, m in visible.items():
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


class _LabApplication(sushy_main.Application):
    """sushy-tools' application with our systems driver instead of libvirt/Nova/Ironic."""

    @property
    def systems(self) -> MachineSystemsDriver:
        return self.config["PROVISIONER_SYSTEMS_DRIVER"]  # type: ignore[no-any-return]


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
        driver_cls = MachineSystemsDriver.initialize(app.config, app.logger, machines=machines)
        app.configure(
            extra_config={
                "SUSHY_EMULATOR_AUTH_FILE": str(auth_file),
                "PROVISIONER_SYSTEMS_DRIVER": driver_cls(),
                "PROVISIONER_FAULTS": faults,
                "PROVISIONER_HANG": hang,
            }
        )
        self.faults = faults
        self._servers: list[BaseWSGIServer] = []
        self._threads: list[threading.Thread] = []
        ssl_context = None
        if tls is not None:
            import ssl

            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(str(tls.cert), str(tls.key))
        for port, names in services:
            server = make_server(
                address, port, _PortSystems(app, names), threaded=True, ssl_context=ssl_context
            )
            server.daemon_threads = True  # type: ignore[attr-defined]
            self._servers.append(server)
        scheme = "https" if tls else "http"
        log.info(
            "Redfish BMC emulator (sushy-tools, stand-in for hardware BMCs): %d systems on %s://%s ports %s",
            len(machines),
            scheme,
            address,
            ",".join(str(s.server_port) for s in self._servers),
        )

    def start(self) -> None:
        for server in self._servers:
            t = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"redfish-emulator-{server.server_port}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=5)
