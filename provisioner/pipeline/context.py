"""The run context: everything a stage needs, loaded once per run.

Fields may be added (the pipeline-structure work extends this); none is removed or
renamed without updating every stage.

Seams for tests: ``bmc`` (a ``BMCGate``; give it a ``connect_fn`` returning a controller over
a fake driver), ``talos`` (anything implementing ``workflow.talos_ops.TalosAccess``) and
``netboot`` (a factory for the netboot service's context manager) are all injected here, so
the node flow and cluster formation run without root, VMs or network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..events import EventLog
from ..layout import StateLayout
from ..state import StateStore
from ..workflow.eventwatch import EventWatch

if TYPE_CHECKING:
    from ..inventory.model import Node, Site
    from ..workflow.bmcgate import BMCGate
    from ..workflow.talos_ops import TalosAccess

# Starts the netboot service for the given nodes; entered for the rest of the run.
NetbootFactory = Callable[["RunContext", "list[Node]"], AbstractContextManager[Any]]


@dataclass
class NodeOutcome:
    """How one node ended this run (``up``'s per-node summary)."""

    name: str
    rack: str
    phase: str
    ok: bool
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RunContext:
    site: Site
    layout: StateLayout
    store: StateStore
    events: EventLog
    # The run's progress reporter: ``progress.stage(name, status, message, level="info")``
    # shows one line per change (a live line on a terminal, JSON with -o json).
    progress: Any
    # Options of this run (e.g. ``prune`` for tenants); stages read what they know.
    options: dict[str, Any] = field(default_factory=dict)
    # The selected nodes (``--rack``/``--node``); None means every node of the site.
    nodes: list[Node] | None = None
    # The admin kubeconfig the Kubernetes stages use: ``layout.kubeconfig`` for full bundles
    # (written by the ``cluster`` stage), ``<inventory dir>/<hosted.kubeconfig>`` for hosted
    # ones. ``for_site`` fills it; None only when a test builds a context by hand.
    kubeconfig: Path | None = None
    # BMC commands (limits, threads, credentials), the Talos machine API, the netboot service.
    bmc: BMCGate | None = None
    talos: TalosAccess | None = None
    netboot: NetbootFactory | None = None
    # Seconds between two polls of a node or of etcd.
    poll: float = 2.0
    # Filled while the run goes: per-node outcomes, the cluster's status and error.
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    cluster_status: str = "skipped"  # formed | waiting | failed | hosted | skipped
    cluster_error: str | None = None
    # Set when the cluster cannot form: a worker waiting for the control-plane endpoint stops.
    cluster_failed: asyncio.Event = field(default_factory=asyncio.Event)
    # Each stage's last status in this run (running, done, skipped, failed, halted).
    stages: dict[str, str] = field(default_factory=dict)
    # Set by a stage that completed but leaves later stages nothing to do yet (e.g. the
    # cluster waits for control planes outside the selection): the walk stops there, not failed.
    halt: str | None = None
    # Services a stage starts for the rest of the run (the netboot service); closed at the end.
    resources: ExitStack = field(default_factory=ExitStack)
    # Wakes a node waiting for an event about it (its config fetch) as soon as one is logged.
    watch: EventWatch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = EventWatch(self.events)

    @property
    def selected(self) -> list[Node]:
        return list(self.site.nodes) if self.nodes is None else self.nodes

    def kubeconfig_path(self) -> Path:
        """The kubeconfig for Kubernetes stages; raises if this run has none configured."""
        if self.kubeconfig is None:
            raise RuntimeError("this run context has no kubeconfig (build it with RunContext.for_site)")
        return self.kubeconfig

    @classmethod
    def for_site(cls, site: Site, progress: Any, **fields: Any) -> RunContext:
        """A context over ``site``'s state directory, with the kubeconfig path its bundle implies."""
        layout = StateLayout(site.state_dir)
        store = StateStore(site.state_dir)
        if "kubeconfig" not in fields:
            hosted = site.hosted if site.cluster.bundle_spec.hosted else None
            fields["kubeconfig"] = site.base_dir / hosted.kubeconfig if hosted else layout.kubeconfig
        return cls(site, layout, store, EventLog(layout.events), progress, **fields)
