"""Racks behind boot servers, inside `up`: a ``RackLink`` per such rack for the whole run.

Entered by the netboot stage beside the local netboot service. For each rack among the
pending nodes whose ``boot_server`` is set, the bundle is pushed and the live link opened
(``netboot.rack_link``): the rack's events arrive in the local log as they happen, so the
node flow sees its config fetches like local ones, and installed nodes are told to boot from
disk at once. A boot server that cannot be reached fails that rack's nodes with the reason
(recorded on each node, shown by ``status``) and takes them out of this run; other racks go
on. On exit every link is closed and each remote service stopped, unless the run was told to
keep them (``options["keep_boot_servers"]``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import InputError, OperationError
from ..inventory.model import Node
from ..netboot.rack_link import RackLink
from .context import NodeOutcome, RunContext


class BootServers(contextlib.AbstractContextManager["BootServers"]):
    def __init__(self, ctx: RunContext, pending: list[Node]) -> None:
        self.ctx = ctx
        served = {r.name for r in ctx.site.racks if r.boot_server is not None}
        self.racks: dict[str, list[Node]] = {}
        for n in pending:
            if n.rack in served:
                self.racks.setdefault(n.rack, []).append(n)
        self.links: list[RackLink] = []
        self.failed: dict[str, str] = {}

    def __enter__(self) -> BootServers:
        opts = self.ctx.options
        for rack, nodes in self.racks.items():
            self.ctx.progress.stage("netboot", "running", f"rack {rack}: pushing to its boot server")
            link = RackLink(
                self.ctx.site,
                rack,
                nodes,
                self.ctx.store,
                self.ctx.events,
                keep=bool(opts.get("keep_boot_servers", False)),
                accept_new=bool(opts.get("accept_new_host_key", False)),
            )
            try:
                link.start()
            except (OperationError, InputError, OSError) as exc:
                self._fail_rack(rack, nodes, f"boot server of rack {rack}: {exc}")
                continue
            self.links.append(link)
        return self

    def _fail_rack(self, rack: str, nodes: list[Node], reason: str) -> None:
        """The rack's nodes end this run failed, with the reason; the other racks go on."""
        self.failed[rack] = reason
        ctx = self.ctx
        if ctx.nodes is None:
            ctx.nodes = list(ctx.site.nodes)
        names = {n.name for n in nodes}
        ctx.nodes[:] = [n for n in ctx.nodes if n.name not in names]
        for n in nodes:
            rec = ctx.store.update(n.name, error=reason)
            ctx.progress.step(n.name, rec.phase.value, reason, "error")
            ctx.outcomes[n.name] = NodeOutcome(n.name, rack, rec.phase.value, False, reason, 0.0)

    def __exit__(self, *exc: Any) -> None:
        for link in self.links:
            link.close()
