"""dnsmasq's ``--dhcp-script``: turn lease changes and TFTP transfers into events.

dnsmasq runs ``leasehook.sh ACTION MAC IP [HOSTNAME]`` (ACTION add/old/del) and
``leasehook.sh tftp SIZE ADDRESS FILE`` from its helper process; the wrapper sets
PROVISIONER_EVENTS (the event log) and PROVISIONER_NODEMAP (boot MAC -> node). The hook
never fails loudly: a broken event must not disturb DHCP, so errors go to stderr, which
dnsmasq copies into its log.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..events import DHCP_LEASE, EventLog

TFTP_TRANSFER = "tftp.transfer"


def _node_for(mac: str) -> str | None:
    path = os.environ.get("PROVISIONER_NODEMAP")
    if not path:
        return None
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    name = mapping.get(mac.lower())
    return str(name) if name else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    events_path = os.environ.get("PROVISIONER_EVENTS")
    if not events_path or len(args) < 3:
        print("leasehook: PROVISIONER_EVENTS unset or too few arguments", file=sys.stderr)
        return 0
    log = EventLog(Path(events_path))
    action = args[0]
    try:
        if action == "tftp":
            size, address, filename = args[1], args[2], args[3] if len(args) > 3 else ""
            log.append(TFTP_TRANSFER, None, "ok", ip=address, file=filename, size=int(size))
            return 0
        mac, ip = args[1].lower(), args[2]
        hostname = args[3] if len(args) > 3 else None
        node = _node_for(mac)
        tags = os.environ.get("DNSMASQ_TAGS", "").split()
        log.append(
            DHCP_LEASE,
            node,
            "ok" if node else "unknown",
            action=action,
            mac=mac,
            ip=ip,
            hostname=hostname,
            tags=tags,
            ipxe="ipxe" in tags,
            interface=os.environ.get("DNSMASQ_INTERFACE"),
        )
    except Exception as exc:  # never let an event failure bubble into dnsmasq
        print(f"leasehook: cannot record {action} event: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
