"""BMC control over IPMI and Redfish: one interface, reliable calls, many nodes at once.

``connect(node, base_dir)`` gives a ``BMCController`` for a node; ``run_on_nodes``
runs a task on many nodes within concurrency limits. See base.py for the interface,
registry.py for how a protocol plugs in (its settings model, lazy driver factory, lab
emulator), controller.py for timeouts/retries/verification, limits.py + fanout.py for
the parallelism. The built-in protocols register themselves when this package is imported.
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
from .ipmi_protocol import IpmiSettings
from .limits import RackLimiter
from .redfish_protocol import RedfishSettings
from .settings import BMCProtocol, BMCSettings

__all__ = [
    "BMCAuthError",
    "BMCCommandError",
    "BMCConfigError",
    "BMCController",
    "BMCError",
    "BMCProtocol",
    "BMCSettings",
    "BMCTimeout",
    "BMCUnavailable",
    "BMCVerifyError",
    "BootDevice",
    "BootOverride",
    "ControllerSettings",
    "Identity",
    "IpmiSettings",
    "NodeResult",
    "PowerAction",
    "PowerState",
    "RackLimiter",
    "RedfishSettings",
    "connect",
    "run_on_nodes",
]
