"""Every path under a cluster's state directory, in one place.

The state directory is the contract between stages and between runs: a rerun, another
process (the netboot service, the dnsmasq lease hook, a second rack's run) or an operator
reading it by hand must find each file where every other reader expects it. Only this
module joins paths under the state directory; everything else asks a ``StateLayout``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateLayout:
    """The files of one cluster's state directory (``state/<cluster>/`` by default)."""

    root: Path

    # -- secrets and configs (stage: secrets, configs)
    @property
    def secrets(self) -> Path:
        return self.root / "secrets.yaml"

    @property
    def configs_dir(self) -> Path:
        return self.root / "configs"

    def config(self, node: str) -> Path:
        return self.configs_dir / f"{node}.yaml"

    @property
    def talosconfig(self) -> Path:
        return self.root / "talosconfig"

    # -- cluster formation
    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def cluster_record(self) -> Path:
        return self.root / "cluster.json"

    # -- node records, events, locks
    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    def node_record(self, node: str) -> Path:
        return self.nodes_dir / f"{node}.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def rack_lock(self, rack: str) -> Path:
        return self.locks_dir / f"rack-{rack}.lock"

    @property
    def cluster_lock(self) -> Path:
        return self.locks_dir / "cluster.lock"

    @property
    def site_lock(self) -> Path:
        """Held while secrets and configs are generated, so concurrent rack runs never race."""
        return self.locks_dir / "site.lock"

    # -- netboot
    @property
    def netboot_dir(self) -> Path:
        return self.root / "netboot"

    @property
    def netboot_remote_dir(self) -> Path:
        return self.root / "netboot-remote"

    def netboot_remote_record(self, rack: str) -> Path:
        return self.netboot_remote_dir / f"{rack}.json"

    # -- the Cozystack platform stages
    @property
    def platform_dir(self) -> Path:
        return self.root / "platform"

    def platform_stage(self, stage: str) -> Path:
        """The record a platform stage writes when it has completed (JSON)."""
        return self.platform_dir / f"{stage}.json"

    @property
    def platform_journal(self) -> Path:
        """What the platform stage applied, by object, with the digest of the applied content."""
        return self.platform_dir / "applied.journal"

    # -- reports
    @property
    def report(self) -> Path:
        return self.root / "report.html"
