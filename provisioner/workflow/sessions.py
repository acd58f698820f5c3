"""The BMC controllers a run keeps open between a node's consecutive steps.

With ``keep`` a controller (its IPMI session, its Redfish connection and discovered system)
stays open for the node's next step: off, PXE once and on then cost one login instead of three.
Without it, or when the step fails, it is closed: an open session holds one of the BMC's few
slots, and after a fault the next step logs in afresh. The run's BMC gate keeps them here, and
so does each BMC worker process (``bmcprocs``) for the nodes it drives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from ..bmc import BMCController

T = TypeVar("T")


class HeldControllers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, BMCController] = {}

    def run(
        self, name: str, connect: Callable[[], BMCController], fn: Callable[[BMCController], T], keep: bool
    ) -> T:
        """``fn`` on ``name``'s held controller, or on a new one from ``connect`` (its first
        command logs in); kept afterwards only with ``keep`` and only if ``fn`` succeeded."""
        controller = self.pop(name) or connect()
        try:
            result = fn(controller)
        except BaseException:
            controller.close()
            raise
        if keep:
            with self._lock:
                self._held[name] = controller
        else:
            controller.close()
        return result

    def pop(self, name: str) -> BMCController | None:
        """``name``'s held controller, no longer held (the caller uses or closes it)."""
        with self._lock:
            return self._held.pop(name, None)

    def names(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def close_all(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for controller in held:
            controller.close()
