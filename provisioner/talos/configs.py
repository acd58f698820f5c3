"""Render one Talos machine config per node, check it, and write it.

Layers, each a strategic merge onto the previous one:

1. ``machine-configs/<role>.yaml.j2``: what ``talosctl gen config`` emits, cluster-wide;
2. ``machine-configs/cozystack/all.yaml.j2`` and ``cozystack/<role>.yaml.j2``: the
   Talos settings Cozystack requires;
3. ``machine-configs/node/{legacy,multidoc}.yaml.j2``: per-node values (hostname, static
   address on the boot NIC chosen by MAC, gateway, DNS, NTP, VIP on control planes,
   install disk, labels), in the 1.11 or the 1.12+ contract (``versions.py``);
4. the inventory's ``cluster.talos.config_patches``, then the node's ``config_patches``
   (strategic merge or JSON6902, see ``patches.py``).

Layers 1-2 do not depend on the node, so they are rendered once per role; the rendered
``cluster:`` section, which per-node values never touch, is also serialised once per role
and reused while no patch changes it. Output is a pure function of the inventory and the
secrets: same inputs, byte-identical files.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jinja2

from ..errors import InputError
from ..fsutil import private_dir
from ..inventory.model import Management, Node, Role, Site
from ..layout import StateLayout
from . import yamlout
from .checks import check_node_config
from .patches import Document, Patch, apply_patch, apply_strategic, load_patch, parse_patch
from .pki import b64
from .secrets import SecretsBundle, ensure_secrets
from .talosconfig import write_talosconfig
from .versions import Contract, contract_for

log = logging.getLogger(__name__)

LINK_ALIAS = "mgmt0"  # 1.12+: the alias LinkAliasConfig gives the boot NIC (matched by MAC)


def templates_dir() -> Path:
    """``machine-configs/`` of this checkout, or the copy an installed package carries as
    ``provisioner/machine_configs/`` (``PROVISIONER_MACHINE_CONFIGS`` overrides both)."""
    override = os.environ.get("PROVISIONER_MACHINE_CONFIGS")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent / "machine-configs"
    return checkout if checkout.is_dir() else package / "machine_configs"


@functools.lru_cache(maxsize=8)
def _environment(directory: str) -> jinja2.Environment:
    """One environment per template directory: jinja2 caches the compiled templates in it."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,
        cache_size=64,
    )


def _management(site: Site) -> Management:
    if site.networks is None:
        raise InputError(
            f"networks.management is required to generate Talos configs (bundle {site.cluster.bundle.value}"
            " without networks means an existing cluster: nothing to install)"
        )
    return site.networks.management


def _endpoint(site: Site) -> str:
    endpoint = site.api_endpoint
    if endpoint is None:
        raise InputError(
            "cluster.api_server_endpoint: cannot tell the control-plane endpoint; set "
            "networks.management.vip or cluster.api_server_endpoint (several control planes, no VIP)"
        )
    return endpoint if urlparse(endpoint).port else f"{endpoint}:6443"


class Renderer:
    """Renders node configs of one site with one secrets bundle, caching everything that
    does not depend on the node. Not thread-safe; cheap to create."""

    def __init__(self, site: Site, secrets: SecretsBundle, templates: Path | None = None) -> None:
        self.site = site
        self.secrets = secrets
        self.contract: Contract = contract_for(site.cluster.talos)
        self.env = _environment(str(templates or templates_dir()))
        mgmt = _management(site)
        self.mgmt = mgmt
        self.endpoint = _endpoint(site)
        host = urlparse(self.endpoint).hostname or ""
        sans = [host]
        if mgmt.vip is not None and str(mgmt.vip) not in sans:
            sans.append(str(mgmt.vip))
        nets = site.networks
        assert nets is not None
        cluster = site.cluster
        self.cluster_ctx = {
            "name": cluster.name,
            "endpoint": self.endpoint,
            "kubernetes_version": cluster.kubernetes_version,
            "installer": cluster.talos.installer,
            "extra_kernel_args": list(cluster.talos.extra_kernel_args),
            "dns_domain": cluster.cluster_domain,
            "pod_subnets": [str(nets.pod_cidr)],
            "service_subnets": [str(nets.service_cidr)],
            "node_subnets": [str(mgmt.subnet)],
            "api_cert_sans": sans,
        }
        s = secrets
        self.secret_ctx = {
            "cluster_id": s.cluster_id,
            "cluster_secret": s.cluster_secret,
            "bootstrap_token": s.bootstrap_token,
            "secretbox_encryption_secret": s.secretbox_encryption_secret,
            "trustd_token": s.trustd_token,
            "os_crt": b64(s.os.crt or b""),
            "os_key": b64(s.os.key),
            "k8s_crt": b64(s.k8s.crt or b""),
            "k8s_key": b64(s.k8s.key),
            "aggregator_crt": b64(s.k8s_aggregator.crt or b""),
            "aggregator_key": b64(s.k8s_aggregator.key),
            "service_account_key": b64(s.k8s_service_account.key),
            "etcd_crt": b64(s.etcd.crt or b""),
            "etcd_key": b64(s.etcd.key),
        }
        self._patches: dict[Path, Patch] = {}
        self.cluster_patches = [
            self._patch(p, f"cluster.talos.config_patches[{i}]")
            for i, p in enumerate(cluster.talos.config_patches)
        ]
        self._base: dict[Role, list[Document]] = {}
        self._sections: dict[int, tuple[Any, str]] = {}

    # --- inputs ---------------------------------------------------------------------------------

    def _patch(self, rel: str | dict[str, Any], where: str) -> Patch:
        if isinstance(rel, dict):  # inline in the inventory: one strategic-merge document
            return parse_patch(json.dumps(rel), f"{where} (inline)")  # JSON is YAML; plain types only
        path = Path(rel)
        if not path.is_absolute():
            path = self.site.base_dir / path
        if path not in self._patches:
            self._patches[path] = load_patch(path, where)
        return self._patches[path]

    def _render(self, name: str, **ctx: Any) -> list[Document]:
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound:
            raise InputError(f"machine config template {name} not found in {templates_dir()}") from None
        text = template.render(talos=self.contract, c=self.cluster_ctx, s=self.secret_ctx, **ctx)
        return yamlout.load_all(text)

    def vip_for(self, node: Node) -> str | None:
        return str(self.mgmt.vip) if node.role is Role.CONTROLPLANE and self.mgmt.vip is not None else None

    # --- layers ---------------------------------------------------------------------------------

    def role_base(self, role: Role) -> list[Document]:
        """Layers 1-2 plus the ``cluster:`` part of leading strategic cluster patches."""
        if role not in self._base:
            docs = self._render(f"{role.value}.yaml.j2")
            docs = apply_strategic(docs, self._render("cozystack/all.yaml.j2"))
            with contextlib.suppress(InputError):
                docs = apply_strategic(docs, self._render(f"cozystack/{role.value}.yaml.j2"))
            # Per-node values never touch `cluster:`, so merging the cluster part of the
            # operator's strategic patches here gives the same result as merging it after
            # them, and lets every node share (and serialise once) that section. Only
            # patches before the first JSON6902 one qualify: order matters past it.
            for patch in self.cluster_patches:
                if patch.json6902:
                    break
                hoisted = [{"cluster": d["cluster"]} for d in patch.strategic
                           if "kind" not in d and "cluster" in d]
                docs = apply_strategic(docs, hoisted)
            self._base[role] = docs
        return self._base[role]

    def node_values(self, node: Node) -> list[Document]:
        mgmt = self.mgmt
        ctx = {
            "name": node.name,
            "mac": node.boot.mac,
            "address": f"{node.ip}/{mgmt.subnet.prefixlen}",
            "gateway": str(mgmt.gateway),
            "mtu": mgmt.mtu,
            "nameservers": [str(d) for d in mgmt.dns],
            "ntp": list(mgmt.ntp),
            "vip": self.vip_for(node),
            "install_disk": node.install_disk,
            "labels": dict(node.labels),
            "link": LINK_ALIAS,
        }
        return self._render(f"node/{self.contract.template_suffix}.yaml.j2", n=ctx)

    def documents(self, node: Node) -> list[Document]:
        """Every config document of ``node``, after all four layers (v1alpha1 first)."""
        docs = apply_strategic(self.role_base(node.role), self.node_values(node))
        hoisting = True
        for patch in self.cluster_patches:
            hoisting = hoisting and not patch.json6902
            if hoisting:  # its `cluster:` part is already in role_base
                rest = [_without_cluster(d) for d in patch.strategic]
                docs = apply_strategic(docs, [d for d in rest if d])
            else:
                docs = apply_patch(docs, patch)
        for i, rel in enumerate(node.config_patches):
            docs = apply_patch(docs, self._patch(rel, f"nodes[{node.name}].config_patches[{i}]"))
        return docs

    # --- output ---------------------------------------------------------------------------------

    def _section(self, key: str, value: Any) -> str:
        if isinstance(value, dict | list):
            hit = self._sections.get(id(value))
            if hit is not None and hit[0] is value:
                return hit[1]
            text = yamlout.dump({key: value})
            self._sections[id(value)] = (value, text)  # keeps `value` alive, so the id stays unique
            return text
        return yamlout.dump({key: value})

    def serialize(self, docs: list[Document]) -> bytes:
        """The multi-document YAML file: v1alpha1 first (as talosctl writes it), then the rest.
        Only the ``cluster:`` section is memoised: it is the one shared between nodes."""
        main = docs[0]
        parts = [self._section(k, v) if k == "cluster" else yamlout.dump({k: v}) for k, v in main.items()]
        out = "".join(parts)
        for doc in docs[1:]:
            out += "---\n" + yamlout.dump(doc)
        return out.encode()

    def render(self, node: Node) -> tuple[bytes, list[str]]:
        """(config bytes, check problems) for one node."""
        docs = self.documents(node)
        return self.serialize(docs), check_node_config(node, docs, self.secrets, self.vip_for(node))


def _without_cluster(doc: Document) -> Document:
    if "kind" in doc:
        return doc
    return {k: v for k, v in doc.items() if k != "cluster"}


def render_node_config(site: Site, secrets: SecretsBundle, node: Node) -> bytes:
    """One node's machine config: pure and deterministic (reads only templates and patch
    files). Raises InputError if the semantic checks fail."""
    data, problems = Renderer(site, secrets).render(node)
    if problems:
        raise InputError(_problems_text(problems))
    return data


def _problems_text(problems: list[str]) -> str:
    return "machine configs failed the safety checks:\n  " + "\n  ".join(problems)


def _select(site: Site, nodes: Iterable[Node | str] | None) -> list[Node]:
    if nodes is None:
        return list(site.nodes)
    out = []
    for n in nodes:
        if isinstance(n, Node):
            out.append(n)
        else:
            try:
                out.append(site.node(n))
            except KeyError:
                raise InputError(f"--node {n}: no such node in the inventory") from None
    return out


@dataclass
class GenerateResult:
    configs: dict[str, Path]
    changed: list[str] = field(default_factory=list)
    talosconfig: Path | None = None
    talosconfig_changed: bool = False


def configs_dir(site: Site) -> Path:
    return StateLayout(site.state_dir).configs_dir


def talosconfig_path(site: Site) -> Path:
    return StateLayout(site.state_dir).talosconfig


def render_all(
    site: Site, secrets: SecretsBundle, nodes: Iterable[Node | str] | None = None
) -> dict[str, bytes]:
    """Render and check the selected nodes; nothing is written if any check fails."""
    renderer = Renderer(site, secrets)
    rendered: dict[str, bytes] = {}
    problems: list[str] = []
    for node in _select(site, nodes):
        data, node_problems = renderer.render(node)
        rendered[node.name] = data
        problems += node_problems
    if problems:
        raise InputError(_problems_text(problems))
    return rendered


def write_configs(site: Site, nodes: Iterable[Node | str] | None = None) -> GenerateResult:
    """Secrets (created once), one config per selected node and the admin talosconfig."""
    secrets = ensure_secrets(site)
    rendered = render_all(site, secrets, nodes)
    out_dir = private_dir(configs_dir(site))
    result = GenerateResult(configs={name: out_dir / f"{name}.yaml" for name in rendered})
    result.changed = _write_changed(out_dir, {result.configs[n]: data for n, data in rendered.items()})
    endpoints = [str(n.ip) for n in site.controlplanes]
    result.talosconfig = talosconfig_path(site)
    result.talosconfig_changed = write_talosconfig(result.talosconfig, site.cluster.name, endpoints, secrets)
    log.info("wrote %d machine configs (%d changed) to %s", len(rendered), len(result.changed), out_dir)
    return result


def generate_configs(site: Site, nodes: Iterable[Node | str] | None = None) -> dict[str, Path]:
    """Write ``<state_dir>/configs/<node>.yaml`` and ``<state_dir>/talosconfig`` (both 0600);
    node name -> config path."""
    return write_configs(site, nodes).configs


def _unchanged(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data) or path.read_bytes() != data:
            return False
    except OSError:
        return False
    if path.stat().st_mode & 0o777 != 0o600:
        os.chmod(path, 0o600)
    return True


def _syncfs(fd: int) -> bool:
    """syncfs(2): flush one filesystem. Python's os module lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.syncfs(fd) == 0)
    except (OSError, AttributeError):
        return False


def _write_changed(out_dir: Path, files: dict[Path, bytes]) -> list[str]:
    """Replace every changed file atomically; unchanged ones are left alone (mtime too).

    Same guarantee as ``fsutil.atomic_write`` (a crash leaves the old or the new file,
    never a torn one) but batched: all temp files are written, flushed with one
    ``syncfs`` instead of one fsync each (1,000 fsyncs dominate a big site), then renamed,
    then the directory is synced once.
    """
    pending: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            if _unchanged(path, data):
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=out_dir)
            pending.append((tmp, path))
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        if not pending:
            return []
        dir_fd = os.open(out_dir, os.O_RDONLY)
        try:
            if not _syncfs(dir_fd):
                for tmp, _ in pending:
                    with open(tmp, "rb") as fh:
                        os.fsync(fh.fileno())
            for tmp, path in pending:
                os.replace(tmp, path)
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    return [path.stem for _, path in pending]
