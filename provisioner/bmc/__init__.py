"""BMC control over IPMI and Redfish: one interface, reliable calls, many nodes at once.

``connect(node, base_dir)`` gives a ``BMCController`` for a node; ``run_on_nodes``
runs a task on many nodes within concurrency limits. See base.py for the interface,
controller.py for timeouts/retries/verification, fanout.py for the parallelism.
"""

from .base import (
    BMCAuthError,
    BMCCommandError,
    BMCConfigError,
    BMCError,
    BMCTimeout,
    BMCUnavailable,
    BMCVerifyError,
    BootDevice,
    BootOverride,
    Identity,
    PowerAction,
    PowerState,
)
from .controller import BMCController, ControllerSettings, connect
from .fanout import NodeResult, run_on_nodes

__all__ = [
    "BMCAuthError",
    "BMCCommandError",
    "BMCConfigError",
    "BMCController",
    "BMCError",
    "BMCTimeout",
    "BMCUnavailable",
    "BMCVerifyError",
    "BootDevice",
    "BootOverride",
    "ControllerSettings",
    "Identity",
    "NodeResult",
    "PowerAction",
    "PowerState",
    "connect",
    "run_on_nodes",
]
