"""State shared by every subcommand: the global options and the lazily loaded site."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from ..inventory import Inventory, Site, load_inventory
from ..inventory.model import Node

DEFAULT_INVENTORY = "inventory/examples/lab.yaml"


@dataclass
class App:
    inventory_path: Path
    racks: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    output: str = "text"
    verbose: int = 0
    _inventory: Inventory | None = field(default=None, repr=False)

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            self._inventory = load_inventory(self.inventory_path)
            from .output import warn

            for w in self._inventory.warnings:
                warn(str(w))
        return self._inventory

    @property
    def site(self) -> Site:
        return self.inventory.site

    def selected(self, racks: tuple[str, ...] = (), nodes: tuple[str, ...] = ()) -> list[Node]:
        """Nodes chosen by the global --rack/--node plus a subcommand's own selection."""
        return self.site.select(racks or self.racks, nodes or self.nodes)


def app() -> App:
    obj = click.get_current_context().find_root().obj
    assert isinstance(obj, App)
    return obj


pass_app = click.make_pass_decorator(App)
