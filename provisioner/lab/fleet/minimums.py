"""The fewest requests the protocols allow for what `up` does to one node: the yardstick for the fleet.

`up` performs four verified BMC operations per node (power off, PXE next boot, power on, then
after the install: disk, persistent), lets the node fetch three things over HTTP, and asks its
installed OS one Version over mutual TLS; forming the cluster adds a few calls to the control planes.

BMC figures are given two ways, because the boot separates the operations in time:
- ``per_step``: every operation on a fresh session (what `up` did before it kept the session);
- ``per_node``: one session for off + PXE + on and one for the disk step after the install (a
  BMC session does not survive a boot's minutes idle): the real minimum, and what `up` does.

IPMI 2.0 lanplus: a session costs 6 round trips (Get Channel Authentication Capabilities, Open
Session, RAKP 1/2, RAKP 3/4, Set Session Privilege Level; Close Session), a verified operation 2
(the command and one read-back). Redfish with basic auth (no session round trip): the service root
once per connection, then 2 per verified operation (the action or PATCH, one GET of the system) at
the standard URIs.
"""

from __future__ import annotations

from dataclasses import dataclass

BMC_OPERATIONS = 4  # off, PXE once, on, disk persistent
IPMI_SESSION = 6
IPMI_OPERATION = 2
REDFISH_CONNECTION = 1
REDFISH_OPERATION = 2
HTTP_PER_NODE = 3  # /boot.ipxe, /node.ipxe, /config (the kernel and initramfs are not simulated)
TALOS_PER_NODE = 1  # Version over mutual TLS once installed
# Cluster formation: EtcdMemberList on every control plane before bootstrapping (the guard against
# a second bootstrap), Bootstrap, one EtcdMemberList showing every member voting, Kubeconfig.
TALOS_CLUSTER = 3 + 1 + 1 + 1
SLACK = 1.2  # the acceptance bound: protocol minimum + 20%


@dataclass(frozen=True)
class Minimum:
    ipmi: float
    redfish: float


def bmc_per_step() -> Minimum:
    return Minimum(
        ipmi=BMC_OPERATIONS * (IPMI_SESSION + IPMI_OPERATION),
        redfish=BMC_OPERATIONS * (REDFISH_CONNECTION + REDFISH_OPERATION),
    )


def bmc_per_node() -> Minimum:
    return Minimum(
        ipmi=2 * IPMI_SESSION + BMC_OPERATIONS * IPMI_OPERATION,
        redfish=2 * REDFISH_CONNECTION + BMC_OPERATIONS * REDFISH_OPERATION,
    )
