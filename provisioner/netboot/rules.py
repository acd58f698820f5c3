"""The netboot route rules, in one pure-stdlib module: the local service (``routes``) and the
agent on a rack's boot server (``remote_agent``, which may import only the standard library)
both decide with these functions, so the two can never drift apart.

- A machine is identified by its boot MAC first (what DHCP reserved), then its SMBIOS UUID.
- A machine config goes only to the node's own address; a UUID given with the request must
  be that node's. Whether the node may still install is the caller's to check (the local
  service reads the state store, the agent its manifest).
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

N = TypeVar("N")
_HEX12 = re.compile(r"^[0-9a-f]{12}$")

UUID_MISMATCH = "uuid does not match the node"
NO_SUCH_NODE = "no node with this uuid or address"
FOREIGN_ADDRESS = "request from a foreign address"


def normalise_mac(value: str) -> str | None:
    """``52-54-00-..`` (iPXE ``hexhyp``), ``52:54:..``, ``5254.00..`` or bare hex -> ``52:54:00:..``;
    None for an unexpanded iPXE variable or garbage."""
    if not value or "$" in value:
        return None
    raw = re.sub(r"[:.\-]", "", value.strip().lower())
    if not _HEX12.match(raw):
        return None
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def normalise_uuid(value: str) -> str | None:
    if not value or "$" in value:  # an unexpanded ${uuid}
        return None
    try:
        return str(uuidlib.UUID(value))
    except ValueError:
        return None


def identify(
    by_mac: Mapping[Any, N], by_uuid: Mapping[Any, N], mac: str | None, uuid: str | None
) -> N | None:
    """The machine asking for its iPXE script: by boot MAC first, then by SMBIOS UUID."""
    if mac and mac in by_mac:
        return by_mac[mac]
    if uuid and uuid in by_uuid:
        return by_uuid[uuid]
    return None


def config_requester(
    by_uuid: Mapping[Any, N],
    by_ip: Mapping[Any, N],
    uuid: str | None,
    client_ip: str,
    ip_of: Callable[[Any], str],
    uuid_of: Callable[[Any], str | None],
) -> tuple[N | None, str | None]:
    """Whose config a ``/config`` request may get: ``(node, None)``, or ``(node or None, reason)``
    when it is denied (the reasons above; the node, when known, is named in the event)."""
    node = by_uuid.get(uuid) if uuid else None
    if node is None:
        node = by_ip.get(client_ip)
        if node is not None and uuid and uuid_of(node) and uuid_of(node) != uuid:
            return node, UUID_MISMATCH
    if node is None:
        return None, NO_SUCH_NODE
    if client_ip != ip_of(node):
        return node, FOREIGN_ADDRESS
    return node, None
