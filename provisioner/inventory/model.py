"""The site an operator describes: typed, defaulted and checked field by field.

Cross-field rules (uniqueness, subnets, quorum, bundle requirements) live in
``checks.py``; this module only makes each value well-formed on its own, so that the
checks can rely on normalised types (netaddr addresses, lower-case MACs).
"""

from __future__ import annotations

import os
import re
import socket
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import netaddr
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializeAsAny,
    WrapValidator,
    field_validator,
)

from ..bmc import registry as bmc_registry
from ..bmc.settings import BMCProtocol as BMCProtocol  # re-exported: older imports name it here
from ..bmc.settings import BMCSettings
from ..bundles import BUNDLES
from ..secretref import SecretRef as SecretRef  # re-exported: older imports name it here
from .problems import kind_of

DEFAULT_TALOS_VERSION = "v1.11.6"
DEFAULT_KUBERNETES_VERSION = "1.34.1"
DEFAULT_COZYSTACK_VERSION = "v0.41.11"

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_TALOS_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?$")


def _ip(value: Any) -> netaddr.IPAddress:
    if isinstance(value, netaddr.IPAddress):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address, got {kind_of(value)}")
    # inet_pton is strict (no "10.1" shorthand) and several times faster than netaddr's parser,
    # which matters at 10,000 nodes with two addresses each.
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        packed = socket.inet_pton(family, value)
    except (OSError, ValueError):
        raise ValueError(f"{value!r} is not a valid IP address") from None
    return netaddr.IPAddress(int.from_bytes(packed, "big"), 6 if family == socket.AF_INET6 else 4)


def _net(value: Any) -> netaddr.IPNetwork:
    if isinstance(value, netaddr.IPNetwork):
        return value
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{value!r} is not a network in CIDR form (like 10.0.0.0/24)")
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError):
        raise ValueError(f"{value!r} is not a valid network") from None
    if net.ip != net.network:
        raise ValueError(f"{value!r} has host bits set; the network is {net.cidr}")
    return net


def _range(value: Any) -> netaddr.IPRange:
    if isinstance(value, netaddr.IPRange):
        return value
    if not isinstance(value, str) or "-" not in value:
        raise ValueError(f"{value!r} is not an address range (like 10.0.0.100-10.0.0.150)")
    first, _, last = value.partition("-")
    a, b = _ip(first.strip()), _ip(last.strip())
    if a.version != b.version or a > b:
        raise ValueError(f"{value!r}: the first address must not be after the last")
    return netaddr.IPRange(a, b)


def _mac(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a MAC address like 52:54:00:12:34:56")
    try:
        eui = netaddr.EUI(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError(f"{value!r} is not a valid MAC address") from None
    if eui.version != 48:
        raise ValueError(f"{value!r} is not a 48-bit MAC address")
    eui.dialect = netaddr.mac_unix_expanded
    return str(eui).lower()


def _uuid(value: Any) -> str:
    import uuid

    if not isinstance(value, str):
        raise ValueError("expected an SMBIOS UUID like 4c4c4544-0042-3510-8052-b4c04f4d3732")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a valid UUID") from None


IP = Annotated[netaddr.IPAddress, BeforeValidator(_ip), PlainSerializer(str, return_type=str)]
Network = Annotated[netaddr.IPNetwork, BeforeValidator(_net), PlainSerializer(str, return_type=str)]
Range = Annotated[
    netaddr.IPRange,
    BeforeValidator(_range),
    PlainSerializer(lambda r: f"{r[0]}-{r[-1]}", return_type=str),
]
MAC = Annotated[str, BeforeValidator(_mac)]
UUID = Annotated[str, BeforeValidator(_uuid)]


class Model(BaseModel):
    """Unknown keys are errors: a typo must never silently drop a setting."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# SecretRef / SecretReference live in ``provisioner.secretref`` (the BMC settings use them too).


class BundleName(StrEnum):
    PAAS_FULL = "paas-full"
    PAAS_HOSTED = "paas-hosted"
    DISTRO_FULL = "distro-full"
    DISTRO_HOSTED = "distro-hosted"


class ConfigDelivery(StrEnum):
    URL = "url"  # nodes fetch their config at boot through talos.config=
    APPLY = "apply"  # nodes boot into maintenance mode and receive it over the Talos API


class Role(StrEnum):
    CONTROLPLANE = "controlplane"
    WORKER = "worker"


class BootMode(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class DHCPMode(StrEnum):
    RESERVATIONS = "reservations"  # this tool's dnsmasq answers known MACs only
    PROXY = "proxy"  # the site runs DHCP; dnsmasq only adds boot options


def _kernel_arg(value: str) -> str:
    """One kernel argument, e.g. ``console=ttyS0``: no whitespace or control characters.

    The arguments are written into the iPXE script line by line; a newline would start a
    new iPXE command (``chain http://elsewhere``), a space would split one argument into
    two. Both are refused here, at the door, with the argument's position.
    """
    if not value:
        raise ValueError("empty kernel argument")
    bad = next((c for c in value if c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(
            f"kernel argument {value!r} contains {_char_name(bad)}; one argument per list item, "
            "no whitespace or control characters"
        )
    return value


def _char_name(c: str) -> str:
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", " ": "a space"}
    return names.get(c, f"the character U+{ord(c):04X}")


KernelArg = Annotated[str, AfterValidator(_kernel_arg)]


class Talos(Model):
    version: str = DEFAULT_TALOS_VERSION
    installer_image: str | None = None  # default: Cozystack's Talos build for the version
    schematic: dict[str, Any] = Field(default_factory=lambda: {"customization": {}})
    config_delivery: ConfigDelivery = ConfigDelivery.URL
    extra_kernel_args: list[KernelArg] = Field(default_factory=list)
    # Files relative to the inventory, or inline strategic-merge patches (as talosctl's --config-patch
    # takes a file or inline YAML): a small patch can live in the inventory itself.
    config_patches: list[str | dict[str, Any]] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        m = _TALOS_VERSION.match(v)
        if not m:
            raise ValueError(f"{v!r} is not a Talos version like v1.11.6")
        if (int(m[1]), int(m[2])) < (1, 11):
            raise ValueError(f"Talos {v} is not supported; use v1.11 or newer")
        return v

    @property
    def minor(self) -> tuple[int, int]:
        m = _TALOS_VERSION.match(self.version)
        assert m is not None
        return int(m[1]), int(m[2])

    @property
    def installer(self) -> str:
        return self.installer_image or f"ghcr.io/cozystack/cozystack/talos:{self.version}"


# The longest any single wait may be. A week is far beyond every real step (the slowest,
# the platform install, takes about an hour), yet still a number the event loop and the
# deadline arithmetic handle: ``1e400`` (infinity), ``nan`` or a typo with extra digits
# must be an input error, never "wait forever".
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0


def _bounded_seconds(value: float) -> float:
    if value > MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"{value:g} seconds is more than the 7-day limit ({MAX_TIMEOUT_SECONDS:g} s) for one wait"
        )
    return value


# Seconds: positive, finite (inf/nan refused) and at most MAX_TIMEOUT_SECONDS.
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False), AfterValidator(_bounded_seconds)]


class Timeouts(Model):
    """Seconds each wait may take before the node is power-cycled or marked failed."""

    bmc_command: Seconds = 20.0
    boot: Seconds = 900.0  # power on -> config fetched / maintenance API up
    install: Seconds = 1800.0  # config applied -> installed OS answers
    etcd: Seconds = 900.0
    boot_retries: int = Field(default=2, ge=0, le=10)
    platform: Seconds = 3600.0  # the whole Cozystack platform install (HelmReleases)


class Cluster(Model):
    name: str
    bundle: BundleName
    root_host: str | None = None
    api_server_endpoint: str | None = None  # default https://<vip>:6443
    talos: Talos = Field(default_factory=Talos)
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    cozystack_version: str = DEFAULT_COZYSTACK_VERSION
    cluster_domain: str = "cozy.local"
    state_dir: str | None = None  # default state/<cluster name>; relative to the inventory's directory
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(
                f"{v!r} must be a DNS label: lowercase letters, digits and '-', at most 63 characters"
            )
        return v

    @field_validator("root_host", "cluster_domain")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and not _HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a valid DNS name")
        return v

    @field_validator("api_server_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https://[^/\s:]+(:\d{1,5})?/?$", v):
            raise ValueError(f"{v!r} must look like https://<host or IP>:6443")
        return v

    @field_validator("kubernetes_version")
    @classmethod
    def _k8s(cls, v: str) -> str:
        v = v.removeprefix("v")
        if not re.match(r"^\d+\.\d+\.\d+$", v):
            raise ValueError(f"{v!r} is not a Kubernetes version like 1.34.1")
        return v

    @property
    def bundle_spec(self) -> Any:
        return BUNDLES[self.bundle.value]


class DHCP(Model):
    mode: DHCPMode = DHCPMode.RESERVATIONS
    # Addresses handed to machines that are not in the inventory; none by default, so an
    # unknown machine never boots anything from this site.
    range: Range | None = None
    lease_time: str = "1h"


class Management(Model):
    subnet: Network
    gateway: IP
    dns: list[IP] = Field(default_factory=list)
    ntp: list[str] = Field(default_factory=list)
    vip: IP | None = None
    dhcp: DHCP = Field(default_factory=DHCP)
    mtu: int = Field(default=1500, ge=576, le=9216)


class MetalLB(Model):
    range: Range


class Netboot(Model):
    server: IP  # the address nodes reach dnsmasq/TFTP/HTTP on
    http_port: int = Field(default=8080, ge=1, le=65535)
    interface: str | None = None  # where dnsmasq listens; default: the one holding `server`


class Networks(Model):
    management: Management
    pod_cidr: Network = Field(default_factory=lambda: _net("10.244.0.0/16"))
    pod_gateway: IP = Field(default_factory=lambda: _ip("10.244.0.1"))
    service_cidr: Network = Field(default_factory=lambda: _net("10.96.0.0/16"))
    join_cidr: Network = Field(default_factory=lambda: _net("100.64.0.0/16"))
    metallb: MetalLB | None = None
    netboot: Netboot | None = None


class BootServer(Model):
    host: str
    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    key: str | None = None  # private key file for SSH
    # DHCP on the rack's segment: ``reservations`` (the boot server hands out the nodes'
    # addresses) or ``proxy`` (the segment has its own DHCP server; the boot server adds only
    # the boot options). Default: the site's ``networks.management.dhcp.mode``.
    dhcp: DHCPMode | None = None


class Rack(Model):
    name: str
    boot_server: BootServer | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} must be lowercase letters, digits and '-'")
        return v


# ``nodes[].bmc``: one member of a union discriminated by ``protocol``, each member the settings
# model its protocol registered (``provisioner.bmc.registry``): IPMI owns ``cipher_suite``,
# Redfish ``verify_tls``, ``ca_file``, ``scheme``, ``system_id``, ``allow_insecure_http``.
BMC = Annotated[SerializeAsAny[BMCSettings], WrapValidator(bmc_registry.validate_settings)]


class Boot(Model):
    mode: BootMode = BootMode.UEFI
    mac: MAC


class Node(Model):
    name: str
    rack: str
    role: Role
    bmc: BMC | None = None
    boot: Boot
    uuid: UUID | None = None
    serial: str | None = None
    ip: IP
    install_disk: str = "/dev/sda"
    data_disks: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    config_patches: list[str | dict[str, Any]] = Field(default_factory=list)  # files or inline patches

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} must be a DNS label (it becomes the node's hostname)")
        return v

    @field_validator("install_disk")
    @classmethod
    def _disk(cls, v: str) -> str:
        if not v.startswith("/dev/"):
            raise ValueError(f"{v!r} must be a device path like /dev/sda")
        return v

    @field_validator("data_disks")
    @classmethod
    def _data_disks(cls, v: list[str]) -> list[str]:
        for d in v:
            if not d.startswith("/dev/"):
                raise ValueError(f"{d!r} must be a device path like /dev/sdb")
        if len(set(v)) != len(v):
            raise ValueError("a data disk is listed twice")
        return v


class Hosted(Model):
    kubeconfig: str  # path, relative to the inventory


_TENANT_NAME = re.compile(r"^[a-z0-9]+$")


def _tenant_name(value: Any) -> str:
    """Validated as a dict key, so an error points at the offending name's own line."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `123:` is a YAML integer; as a tenant name it is still fine
    if not isinstance(value, str) or not _TENANT_NAME.match(value):
        raise ValueError(
            f"tenant name {value!r} must be lowercase letters and digits only (no dashes: "
            "Cozystack joins names with '-' to form namespaces)"
        )
    if value == "root":
        raise ValueError("tenant name 'root' is reserved for tenant-root")
    return value


TenantName = Annotated[str, BeforeValidator(_tenant_name)]


def _quantity(value: Any) -> str:
    """A Kubernetes quantity: ``4``, ``500m``, ``16Gi`` (YAML may hand over a number)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a Kubernetes quantity like 4, 500m or 16Gi")
    text = str(value)
    if not re.match(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$", text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity like 4, 500m or 16Gi")
    return text


Quantity = Annotated[str, BeforeValidator(_quantity)]


class Tenant(Model):
    """A Cozystack tenant (chart packages/apps/tenant) and the tenants nested in it."""

    host: str | None = None
    etcd: bool = False
    ingress: bool = False
    monitoring: bool = False
    seaweedfs: bool = False
    isolated: bool = True
    resource_quotas: dict[str, Quantity] = Field(default_factory=dict)
    children: dict[TenantName, Tenant] = Field(default_factory=dict)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and not _HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a valid DNS name")
        return v


ROOT_SERVICES = ("etcd", "ingress", "monitoring")


def _root_tenant(value: Any) -> Any:
    """tenant-root runs etcd, ingress and monitoring unless the operator says otherwise:
    that is how Cozystack's install leaves it, and every other tenant falls back on it."""
    if isinstance(value, dict):
        return {**dict.fromkeys(ROOT_SERVICES, True), **value}
    return value


class Tenants(Model):
    root: Annotated[Tenant, BeforeValidator(_root_tenant)] = Field(
        default_factory=lambda: Tenant(etcd=True, ingress=True, monitoring=True)
    )


# -- the Cozystack platform (provisioner/cozystack/): inputs beyond the bundle name
class PoolType(StrEnum):
    ZFS = "zfs"
    LVM_THIN = "lvm-thin"


_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,46}[A-Za-z0-9]$")  # piraeus' webhook rule


class PlatformStorage(Model):
    """The LINSTOR storage pool declared on every node's data disks (Cozystack creates none)."""

    pool_type: PoolType = PoolType.ZFS
    pool_name: str = "data"  # the name Cozystack's StorageClasses reference

    @field_validator("pool_name")
    @classmethod
    def _pool_name(cls, v: str) -> str:
        if not _POOL_NAME.match(v):
            raise ValueError(f"{v!r}: 3-48 letters, digits, '_' or '-', starting and ending alphanumeric")
        return v


EXPOSABLE_SERVICES = ("api", "dashboard", "cdi-uploadproxy", "vm-exportproxy", "keycloak")


class Platform(Model):
    """What the operator would otherwise type into Cozystack's ConfigMap (v0.x) or Package (v1.x)."""

    expose_services: list[str] = Field(default_factory=lambda: ["api", "dashboard"])
    expose_ingress: str = "tenant-root"
    # Instead of a MetalLB range: the ingress is published on these node addresses.
    expose_external_ips: list[IP] = Field(default_factory=list)
    bundle_enable: list[str] = Field(default_factory=list)  # optional releases (v1.x: package names)
    bundle_disable: list[str] = Field(default_factory=list)
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-component Helm values
    oidc_enabled: bool = False
    telemetry_enabled: bool = True
    storage: PlatformStorage = Field(default_factory=PlatformStorage)

    @field_validator("expose_services")
    @classmethod
    def _expose(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in EXPOSABLE_SERVICES:
                raise ValueError(f"{name!r} cannot be exposed; choose from {', '.join(EXPOSABLE_SERVICES)}")
        if len(set(v)) != len(v):
            raise ValueError("a service is listed twice")
        return v


class Site(Model):
    """One site: the whole inventory, merged from one file or a directory."""

    cluster: Cluster
    networks: Networks | None = None
    racks: list[Rack] = Field(default_factory=list)
    nodes: list[Node] = Field(default_factory=list)
    hosted: Hosted | None = None
    tenants: Tenants | None = None
    platform: Platform = Field(default_factory=Platform)

    # Set by the loader, not by the operator.
    source: Path = Field(default=Path("."), exclude=True)

    @property
    def base_dir(self) -> Path:
        """Directory relative paths in the inventory are resolved against."""
        return self.source if self.source.is_dir() else self.source.parent

    @property
    def state_dir(self) -> Path:
        """Absolute, so daemons that change directory (dnsmasq) find it too.

        A relative ``cluster.state_dir`` (and the default ``state/<cluster>``) is anchored to
        the inventory's directory, like every other path in it, never to where the tool
        runs: a run from another directory must find the same secrets and node records,
        not start a second site with a new CA that reinstalls the installed nodes."""
        raw = Path(self.cluster.state_dir or f"state/{self.cluster.name}").expanduser()
        # normpath, not resolve(): `..` is folded for readable output, symlinks are kept.
        return Path(os.path.normpath((raw if raw.is_absolute() else self.base_dir / raw).absolute()))

    @property
    def controlplanes(self) -> list[Node]:
        return [n for n in self.nodes if n.role is Role.CONTROLPLANE]

    @property
    def api_endpoint(self) -> str | None:
        if self.cluster.api_server_endpoint:
            return self.cluster.api_server_endpoint.rstrip("/")
        if self.networks and self.networks.management.vip is not None:
            return f"https://{self.networks.management.vip}:6443"
        cps = self.controlplanes
        if len(cps) == 1:
            return f"https://{cps[0].ip}:6443"
        return None

    @property
    def tenant_root(self) -> Tenant:
        return (self.tenants or Tenants()).root

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def select(self, racks: tuple[str, ...] = (), nodes: tuple[str, ...] = ()) -> list[Node]:
        """Nodes matching a --rack/--node selection (both empty: every node)."""
        from ..errors import InputError

        known_racks = {r.name for r in self.racks} | {n.rack for n in self.nodes}
        for r in racks:
            if r not in known_racks:
                raise InputError(
                    f"--rack {r}: no such rack (known: {', '.join(sorted(known_racks)) or 'none'})"
                )
        by_name = {n.name: n for n in self.nodes}
        for n in nodes:
            if n not in by_name:
                raise InputError(f"--node {n}: no such node in the inventory")
        return [n for n in self.nodes if (not racks or n.rack in racks) and (not nodes or n.name in nodes)]


Tenant.model_rebuild()
