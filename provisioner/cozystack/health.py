"""Judging what the platform reports: HelmReleases, root causes, nudges, KubeVirt/CDI, pools, tenants.

Pure functions over the objects the API returns (plain dicts), so every rule is tested without
a cluster. The rules exist because the obvious signal lies in each case (notes cited):
- a HelmRelease ``Ready`` is only current when ``status.observedGeneration`` matches
  (flux-helmrelease.md §4), and one failed release makes dozens report ``DependencyNotReady``
  (upstream issue #3680): report the root, list the rest as blocked by it;
- KubeVirt ``phase: Deployed`` survives later failures (kubevirt.md §4);
- a LinstorSatelliteConfiguration's ``Applied`` proves no pool exists (piraeus.md §4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..tenants import ROOT_NAMESPACE, SERVICES, TenantNode
from .releases import ExpectedRelease

Obj = Mapping[str, Any]

# Ready=False reasons that mean "this release itself is broken", worth a nudge; the others
# (DependencyNotReady, SourceNotReady while the chart is fetched) are waiting, not stuck.
NUDGE_REASONS = frozenset(
    {
        "InstallFailed",
        "UpgradeFailed",
        "RetriesExceeded",
        "ArtifactFailed",
        "ReconcileError",
        "RollbackSucceeded",
        "UninstallSucceeded",
        "RollbackFailed",
        "UninstallFailed",
        "Stalled",
    }
)


def condition(obj: Obj, kind: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return None


@dataclass(frozen=True)
class ReleaseState:
    """One HelmRelease as the record and the progress line show it."""

    ready: bool | None  # None: not created yet, or Ready Unknown / not current
    reason: str
    message: str
    stalled: bool = False


def release_state(hr: Obj | None) -> ReleaseState:
    """Ready only when the condition is True *and* describes the current generation."""
    if hr is None:
        return ReleaseState(None, "NotCreated", "the HelmRelease does not exist yet")
    ready = condition(hr, "Ready")
    stalled_c = condition(hr, "Stalled")
    stalled = bool(stalled_c and stalled_c.get("status") == "True")
    if ready is None:
        return ReleaseState(None, "Pending", "no Ready condition yet", stalled)
    status = ready.get("status")
    reason = str(ready.get("reason") or "")
    message = str(ready.get("message") or "")
    gen = (hr.get("metadata") or {}).get("generation")
    observed = (hr.get("status") or {}).get("observedGeneration")
    if status == "True":
        if gen is not None and observed != gen:
            return ReleaseState(
                None, "Progressing", f"generation {gen} not yet reconciled (observed {observed})"
            )
        return ReleaseState(True, reason, message, stalled)
    if status == "False":
        if stalled and stalled_c is not None:
            reason = str(stalled_c.get("reason") or reason)
        return ReleaseState(False, reason, message, stalled)
    return ReleaseState(None, reason or "Progressing", message, stalled)


def blocked_by(
    expected: Mapping[str, ExpectedRelease], states: Mapping[str, ReleaseState]
) -> dict[str, str | None]:
    """For each not-ready release, the root cause it waits on (``ns/name``), or None.

    The root of a chain is the deepest not-ready dependency whose own dependencies are all
    ready; a release that is itself the root (or ready) gets None. Among several not-ready
    dependencies a failed one (Ready=False, not merely waiting) is followed first. Memoised,
    so 80 releases cost one pass; a dependency cycle ends the walk instead of looping.
    """
    memo: dict[str, str] = {}  # key -> its root (itself when nothing below it is not ready)

    def waiting_on(key: str) -> str | None:
        deps = [d for d in (expected[key].depends_on if key in expected else ()) if not _ready(states, d)]
        if not deps:
            return None
        failed = [
            d
            for d in deps
            if states.get(d) is not None
            and states[d].reason != "DependencyNotReady"
            and states[d].ready is False
        ]
        return (failed or deps)[0]

    def root_of(key: str, visiting: frozenset[str]) -> str:
        if key in memo:
            return memo[key]
        dep = waiting_on(key)
        if dep is None or dep in visiting:
            memo[key] = key
        else:
            memo[key] = root_of(dep, visiting | {key})
        return memo[key]

    out: dict[str, str | None] = {}
    for key in expected:
        if _ready(states, key):
            out[key] = None
            continue
        root = root_of(key, frozenset())
        out[key] = None if root == key else root
    return out


def _ready(states: Mapping[str, ReleaseState], key: str) -> bool:
    st = states.get(key)
    return st is not None and st.ready is True


def release_record(
    expected: Mapping[str, ExpectedRelease], states: Mapping[str, ReleaseState]
) -> dict[str, dict[str, Any]]:
    """The ``releases`` map of the helmreleases stage record (shape fixed by the HTML report)."""
    roots = blocked_by(expected, states)
    out: dict[str, dict[str, Any]] = {}
    for key, rel in expected.items():
        st = states.get(key) or release_state(None)
        out[key] = {
            "ready": st.ready,
            "reason": st.reason,
            "message": st.message,
            "dependsOn": list(rel.depends_on),
            "blockedBy": roots.get(key),
        }
    return out


def failure_summary(record: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per root cause with its reason, followed by the releases it blocks."""
    roots: dict[str, list[str]] = {}
    for key, rec in record.items():
        if rec["ready"] is True:
            continue
        root = rec["blockedBy"] or key
        roots.setdefault(root, [])
        if rec["blockedBy"]:
            roots[root].append(key)
    lines = []
    for root in sorted(roots):
        rec = record.get(root, {"reason": "NotExpected", "message": ""})
        msg = f"{root}: {rec['reason']}"
        if rec["message"]:
            msg += f": {rec['message']}"
        blocked = sorted(roots[root])
        if blocked:
            msg += f" (blocks {len(blocked)}: {', '.join(blocked)})"
        lines.append(msg)
    return lines


def progress_line(record: Mapping[str, Mapping[str, Any]], limit: int = 3) -> str:
    """``HelmReleases 41/76 ready — waiting: kubevirt (DependencyNotReady: kubevirt-operator)``."""
    total = len(record)
    ready = sum(1 for r in record.values() if r["ready"] is True)
    waiting = [(k, r) for k, r in record.items() if r["ready"] is not True]
    parts = []
    for key, rec in waiting[:limit]:
        name = key.split("/", 1)[1]
        why = rec["reason"]
        if rec["blockedBy"]:
            why += f": {rec['blockedBy'].split('/', 1)[1]}"
        parts.append(f"{name} ({why})")
    line = f"HelmReleases {ready}/{total} ready"
    if parts:
        more = f" +{len(waiting) - limit} more" if len(waiting) > limit else ""
        line += " — waiting: " + ", ".join(parts) + more
    return line


@dataclass
class NudgePolicy:
    """Bounded nudges for a release stuck on its own failure: first a ``requestedAt`` reconcile,
    then suspend/resume, each at most ``max_nudges`` times in all, ``interval`` seconds apart."""

    max_nudges: int = 3
    interval: float = 30.0
    stuck_for: float = 20.0  # a failure must persist this long before the first nudge
    done: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)

    def next_action(self, key: str, state: ReleaseState, now: float) -> str | None:
        """``"reconcile"``, ``"suspend-resume"`` or None."""
        if state.ready is not False or (state.reason not in NUDGE_REASONS and not state.stalled):
            self.first_seen.pop(key, None)
            return None
        seen = self.first_seen.setdefault(key, now)
        count = self.done.get(key, 0)
        if count >= self.max_nudges or now - seen < self.stuck_for:
            return None
        if key in self.last and now - self.last[key] < self.interval:
            return None
        self.done[key] = count + 1
        self.last[key] = now
        return "reconcile" if count % 2 == 0 else "suspend-resume"

    def exhausted(self, key: str) -> bool:
        return self.done.get(key, 0) >= self.max_nudges


# -- KubeVirt / CDI (kubevirt.md §4, §5)
def operator_cr_health(obj: Obj | None, kind: str) -> list[str]:
    """Problems with a KubeVirt or CDI CR; empty when healthy. ``phase: Deployed`` is not enough."""
    if obj is None:
        return [f"{kind} does not exist yet"]
    status = obj.get("status") or {}
    problems = []
    if status.get("phase") != "Deployed":
        problems.append(f"phase {status.get('phase') or 'unset'} (want Deployed)")
    want = {"Available": "True", "Progressing": "False", "Degraded": "False"}
    for ctype, expected in want.items():
        c = condition(obj, ctype)
        got = c.get("status") if c else "missing"
        if got != expected:
            detail = ""
            if c and (c.get("reason") or c.get("message")):
                detail = f" ({c.get('reason') or ''}: {c.get('message') or ''})".replace(" (: ", " (")
            problems.append(f"{ctype}={got}{detail} (want {expected})")
    if kind == "KubeVirt":
        gen = (obj.get("metadata") or {}).get("generation")
        if gen is not None and status.get("observedGeneration") != gen:
            problems.append(f"observedGeneration {status.get('observedGeneration')} is not generation {gen}")
    elif status.get("operatorVersion") and status.get("observedVersion") != status.get("operatorVersion"):
        problems.append(
            f"observedVersion {status.get('observedVersion')} is not {status.get('operatorVersion')}"
        )
    return problems


# -- storage pools (piraeus.md §4)
def satellite_problems(
    satellites: Mapping[str, Obj], storage_nodes: Iterable[str], pool: str
) -> dict[str, str]:
    """node -> why its pool is not proven, for every storage node; empty when all are fine."""
    out: dict[str, str] = {}
    for node in storage_nodes:
        sat = satellites.get(node)
        if sat is None:
            out[node] = "no LinstorSatellite for this node (is it a Kubernetes node running LINSTOR?)"
            continue
        problems = []
        # piraeus writes every condition with the generation it observed: one written for an
        # older spec (before this run's storage pools were merged in) proves nothing about them.
        generation = (sat.get("metadata") or {}).get("generation")
        for ctype in ("Available", "Configured"):
            c = condition(sat, ctype)
            seen = (c or {}).get("observedGeneration")
            if c is not None and generation is not None and seen is not None and seen != generation:
                problems.append(f"{ctype}: observedGeneration {seen} is not generation {generation}")
            elif c is None or c.get("status") != "True":
                msg = (c or {}).get("message") or "no condition yet"
                problems.append(f"{ctype}={(c or {}).get('status', 'missing')}: {msg}")
        pools = [p.get("name") for p in ((sat.get("spec") or {}).get("storagePools") or [])]
        if pool not in pools:
            problems.append(f"pool {pool} is not in the satellite's storagePools")
        if problems:
            out[node] = "; ".join(problems)
    return out


# -- tenants (tenants.py resolution vs. live namespaces)
def expected_tenant_labels(node: TenantNode, root_fallback: bool = True) -> dict[str, str]:
    """The model's labels (``tenants show``), plus upstream's fallback for services no tenant on
    the path enables: the v0.41 platform chart labels tenant-root with all four services as
    ``tenant-root`` whatever its spec says (platform-install.md §1.5, §6), and children inherit."""
    labels = node.namespace_labels()
    if root_fallback:
        for svc in SERVICES:
            labels.setdefault(f"namespace.cozystack.io/{svc}", ROOT_NAMESPACE)
    return labels


def tenant_label_problems(
    root: TenantNode, namespaces: Mapping[str, Obj], root_fallback: bool = True, root_host_only: bool = False
) -> list[str]:
    """Every difference between the model's namespace.cozystack.io/* labels and the live ones.

    ``root_host_only`` (Cozystack v1.x): the tenant-root Namespace comes from cozystack-basics with
    only the host label; its services live in its values Secret, which children still inherit."""
    out = []
    for node in root.walk():
        ns = namespaces.get(node.namespace)
        who = "tenant-root" if node.parent is None else f"tenant {'/'.join(node.path[1:])}"
        if ns is None:
            out.append(f"{who}: namespace {node.namespace} does not exist")
            continue
        live = {
            k: v
            for k, v in ((ns.get("metadata") or {}).get("labels") or {}).items()
            if k.startswith("namespace.cozystack.io/")
        }
        want = expected_tenant_labels(node, root_fallback)
        if root_host_only and node.parent is None:
            want = {k: v for k, v in want.items() if k == "namespace.cozystack.io/host"}
            live = {k: v for k, v in live.items() if k in want}
        for label in sorted(set(live) | set(want)):
            if live.get(label) != want.get(label):
                out.append(
                    f"{who} ({node.namespace}): label {label} is {live.get(label)!r}, "
                    f"the inventory resolves {want.get(label)!r}"
                )
    return out
