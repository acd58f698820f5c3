"""How the stand-in finds its machine config at boot, as Talos's "metal" platform does.

Talos reads ``talos.platform=metal`` and ``talos.config=<URL>`` from the kernel command line,
fills ``${uuid}``, ``${serial}``, ``${mac}``, ``${hostname}`` (and ``${code}``) **in query values
only** (the path and host are left alone, so an operator's URL cannot be re-routed by SMBIOS
data), fills a legacy empty ``?uuid=`` with the SMBIOS UUID, and downloads the config with
retries (3 min per attempt, 3 h overall). Without a config source it enters maintenance mode.

Standard library only: this runs first inside the initramfs under TCG, where every import costs.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("standin.bootflow")

# Talos's own download budget; tests and the lab shorten it through the agent's options.
ATTEMPT_TIMEOUT = 180.0
TOTAL_TIMEOUT = 3 * 3600.0

# Kernel arguments the stand-in understands besides Talos's own.
ARG_BOOT = "standin.boot"  # "disk" when extlinux booted the installed copy
ARG_KERNEL = "standin.kernel"  # URL of the kernel to install (the netboot service's copy)
ARG_INITRD = "standin.initrd"  # URL of the initramfs to install
# The same under UEFI: Linux's EFI stub takes any ``initrd=`` in the command line, even inside
# ``standin.initrd=``, as a file to load itself, and fails the boot; this name avoids that.
ARG_RAMDISK = "standin.ramdisk"


@dataclass(frozen=True)
class Identity:
    """What Talos substitutes into the config URL: SMBIOS data, the boot NIC's MAC, the hostname."""

    uuid: str
    serial: str
    mac: str
    hostname: str
    code: str = ""


@dataclass(frozen=True)
class FetchPolicy:
    """Retry budget for the config download (Talos: 3 min per attempt, 3 h overall)."""

    attempt_timeout: float = ATTEMPT_TIMEOUT
    total_timeout: float = TOTAL_TIMEOUT
    first_backoff: float = 1.0
    max_backoff: float = 30.0


class ConfigFetchError(Exception):
    """The config could not be downloaded within the overall budget (the URL is safe to show)."""


def parse_cmdline(text: str) -> dict[str, str]:
    """``key=value`` words of a kernel command line; bare flags map to ""; the last one wins (as Linux)."""
    args: dict[str, str] = {}
    for word in text.split():
        key, _, value = word.partition("=")
        args[key] = value
    if ARG_RAMDISK in args:
        args.setdefault(ARG_INITRD, args[ARG_RAMDISK])
    return args


def read_cmdline(path: Path = Path("/proc/cmdline")) -> dict[str, str]:
    """The running kernel's (or a test file's) command line, parsed."""
    return parse_cmdline(path.read_text())


def _read_first(*paths: Path) -> str:
    for p in paths:
        try:
            return p.read_text().strip()
        except OSError:
            continue
    return ""


def read_identity(sys_root: Path = Path("/"), env: dict[str, str] | None = None) -> Identity:
    """SMBIOS UUID and serial from sysfs, the boot NIC's MAC and the DHCP hostname.

    /init leaves the boot NIC and hostname in ``STANDIN_IFACE``/``STANDIN_MAC``/``STANDIN_HOSTNAME``;
    without them the first non-loopback interface is taken, as it is the one that PXE-booted.
    """
    env = dict(os.environ) if env is None else env
    dmi = sys_root / "sys/class/dmi/id"
    uuid = _read_first(dmi / "product_uuid").lower()
    serial = _read_first(dmi / "product_serial")
    mac = env.get("STANDIN_MAC", "")
    if not mac:
        iface = env.get("STANDIN_IFACE", "")
        net = sys_root / "sys/class/net"
        if not iface and net.is_dir():
            iface = next((n.name for n in sorted(net.iterdir()) if n.name != "lo"), "")
        if iface:
            mac = _read_first(net / iface / "address")
    hostname = env.get("STANDIN_HOSTNAME", "") or _read_first(sys_root / "proc/sys/kernel/hostname")
    return Identity(uuid=uuid, serial=serial, mac=mac.lower(), hostname=hostname)


def expand_config_url(url: str, ident: Identity) -> str:
    """Substitute the identity variables into the URL's query values only (Talos's rule)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    values = {
        "uuid": ident.uuid,
        "serial": ident.serial,
        "mac": ident.mac,
        "hostname": ident.hostname,
        "code": ident.code,
    }
    pairs = []
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key == "uuid" and value == "":
            value = ident.uuid  # legacy form: an empty ?uuid= means "fill in the UUID"
        for name, sub in values.items():
            value = value.replace("${" + name + "}", sub)
        pairs.append((key, value))
    query = urllib.parse.urlencode(pairs)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def config_url(args: dict[str, str]) -> str | None:
    """The config source named on the command line, or None (maintenance mode).

    Only the metal platform downloads from ``talos.config``; Talos treats ``none`` as "no source".
    """
    url = args.get("talos.config", "")
    if args.get("talos.platform", "metal") != "metal" or url in ("", "none"):
        return None
    return url


def fetch(
    url: str,
    policy: FetchPolicy = FetchPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    opener: Callable[[str, float], bytes] | None = None,
) -> bytes:
    """Download ``url`` with Talos's retry budget; any failure (refused, 404, timeout, empty) is retried.

    Raises ConfigFetchError once the overall budget is spent. ``opener`` is for tests only.
    """
    get = opener or _http_get
    deadline = time.monotonic() + policy.total_timeout
    backoff = policy.first_backoff
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            data = get(url, max(0.1, min(policy.attempt_timeout, remaining)))
            if not data.strip():
                raise ValueError("empty response")
            log.info(
                "talos stand-in: fetched %s (%d bytes, attempt %d)",
                url,
                len(data),
                attempt,
            )
            return data
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError/HTTPError are OSErrors;
            # a connection cut mid-body (IncompleteRead) is an HTTPException and must be retried too
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfigFetchError(f"giving up on {url} after {attempt} attempts: {exc}") from None
            wait = min(backoff, remaining, policy.max_backoff)
            log.warning(
                "talos stand-in: fetching %s failed (attempt %d): %s; retrying in %.1f s",
                url,
                attempt,
                exc,
                wait,
            )
            sleep(wait)
            backoff = min(backoff * 2, policy.max_backoff)


def _http_get(url: str, timeout: float) -> bytes:
    import urllib.request  # lazily: only a talos.config boot or an install downloads anything

    req = urllib.request.Request(url, headers={"User-Agent": "talos-standin"})
    # The netboot service is on the node's own segment: never go through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data
