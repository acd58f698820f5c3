"""LINSTOR satellites from LinstorSatelliteConfigurations, as the piraeus operator derives them.

Rules from ``provisioner/cozystack/upstream/notes/piraeus.md``:

- One ``LinstorSatellite`` per Node (named after the node) once the ``LinstorCluster`` exists (§4,
  §5: Cozystack's LinstorCluster has no nodeSelector, so every node).
- Its ``spec`` merges every LinstorSatelliteConfiguration whose ``nodeSelector`` is a subset of the
  node's labels, processed sorted by name; storage pools and properties merge by name, later wins (§3).
  ``nodeAffinity`` is not simulated.
- Status conditions (§4): ``Applied`` True "Resources applied", ``Available`` True "satellite online",
  ``Configured`` True "Pools configured: <pool> (<provider> on <devices>), ..." or False reason ``Error``
  "Error: failed to create device pool ..." when a ``source.hostDevices`` entry does not exist on the
  node. ``storageProviders`` lists the provider kinds in use.
- The node's block devices: on the host there are no real disks, so the simulator reads them from the
  Node annotation ``lab.provisioner/disks`` (comma-separated ``/dev/...`` paths), which the kubelet
  stand-in writes from the devices the node really has (in the lab the node itself looks). A node
  without the annotation has not reported its devices: ``Configured`` is Unknown, reason ``Unknown``.
- Each configuration gets ``Applied=True``, ``status.matched`` (how many satellites it applies to) and
  ``status.appliedTo`` (their names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DISKS_ANNOTATION = "lab.provisioner/disks"
PROVIDERS = {
    "lvmPool": "LVM",
    "lvmThinPool": "LVM_THIN",
    "filePool": "FILE",
    "fileThinPool": "FILE_THIN",
    "zfsPool": "ZFS",
    "zfsThinPool": "ZFS_THIN",
}


@dataclass(frozen=True)
class Satellite:
    """A satellite to write: spec (merged configuration) and the status conditions' inputs."""

    name: str
    spec: dict[str, Any]
    configured: str  # "True" | "False" | "Unknown"
    message: str
    providers: tuple[str, ...]
    configurations: tuple[str, ...]


def matches(config: Mapping[str, Any], node_labels: Mapping[str, str]) -> bool:
    selector = (config.get("spec") or {}).get("nodeSelector") or {}
    return all(node_labels.get(k) == v for k, v in selector.items())


def node_disks(node: Mapping[str, Any]) -> frozenset[str] | None:
    """The devices a node reported through its annotation, or None when it reported nothing."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(DISKS_ANNOTATION)
    if raw is None:
        return None
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def provider(pool: Mapping[str, Any]) -> str:
    for key, kind in PROVIDERS.items():
        if key in pool:
            return kind
    return "UNKNOWN"


def _merge_by_name(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for item in items:
        merged[str(item.get("name"))] = dict(item)
    return list(merged.values())


def satellite(node: Mapping[str, Any], configs: Iterable[Mapping[str, Any]]) -> Satellite:
    """The satellite of ``node`` given every LinstorSatelliteConfiguration."""
    meta = node.get("metadata") or {}
    node_name = meta.get("name", "")
    applying = sorted(
        (c for c in configs if matches(c, meta.get("labels") or {})),
        key=lambda c: (c.get("metadata") or {}).get("name", ""),
    )
    pools = _merge_by_name(p for c in applying for p in (c.get("spec") or {}).get("storagePools") or ())
    props = _merge_by_name(p for c in applying for p in (c.get("spec") or {}).get("properties") or ())
    spec: dict[str, Any] = {"clusterRef": {"name": "linstorcluster"}, "deletionPolicy": "Retain"}
    if pools:
        spec["storagePools"] = pools
    if props:
        spec["properties"] = props
    disks = node_disks(node)
    errors, described = [], []
    for pool in pools:
        devices = list(((pool.get("source") or {}).get("hostDevices")) or ())
        missing = [d for d in devices if disks is not None and d not in disks]
        if missing:
            errors.append(
                f"Error: failed to create device pool '{pool.get('name')}' on node {node_name}: "
                f"device {', '.join(missing)} does not exist"
            )
        where = f" on {', '.join(devices)}" if devices else ""
        described.append(f"{pool.get('name')} ({provider(pool)}{where})")
    if errors:
        configured, message = "False", "\n".join(errors)
    elif disks is None and any((p.get("source") or {}).get("hostDevices") for p in pools):
        configured = "Unknown"
        message = f"node {node_name} has not reported its block devices (annotation {DISKS_ANNOTATION})"
    else:
        configured = "True"
        message = "Pools configured" + (": " + ", ".join(described) if described else "")
    return Satellite(
        name=node_name,
        spec=spec,
        configured=configured,
        message=message,
        providers=tuple(sorted({provider(p) for p in pools})),
        configurations=tuple((c.get("metadata") or {}).get("name", "") for c in applying),
    )


def satellite_conditions(
    sat: Satellite, generation: int, now: str, previous: Iterable[Mapping[str, Any]]
) -> list:
    """The satellite's conditions (reasons AsExpected / Error / Unknown, as the piraeus engine writes)."""
    before = {c.get("type"): c for c in previous}
    reason = {"True": "AsExpected", "False": "Error", "Unknown": "Unknown"}[sat.configured]
    wanted = [
        ("Applied", "True", "AsExpected", "Resources applied"),
        ("Available", "True", "AsExpected", "satellite online"),
        ("Configured", sat.configured, reason, sat.message),
    ]
    conds = []
    for kind, value, why, message in wanted:
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == value else now
        conds.append(
            {
                "type": kind,
                "status": value,
                "reason": why,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": since or now,
            }
        )
    return conds
