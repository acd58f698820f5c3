"""How a HelmRelease's status moves, the way helm-controller v1.4.3 moves it (a pure decision).

Rules from ``provisioner/cozystack/upstream/notes/flux-helmrelease.md``:

- ``spec.suspend: true``: nothing happens except ``status.lastHandledReconcileAt`` taking the
  ``reconcile.fluxcd.io/requestedAt`` token (written by every reconcile, suspended or not, §5).
- Dependencies (§2, ``checkDependencies``): a dependency is ready when it exists, its
  ``metadata.generation == status.observedGeneration`` and ``Ready=True``. Otherwise ``Ready=False``
  reason ``DependencyNotReady`` with upstream's message, and ``observedGeneration`` is NOT written (§4).
- Then an install (or upgrade, when an earlier one succeeded) runs: ``Ready=Unknown`` reason
  ``Progressing``, ``Reconciling=True``. After the simulator's delay it ends:
  ``Ready=True``/``Released=True`` reason ``InstallSucceeded`` (``UpgradeSucceeded``),
  ``observedGeneration = metadata.generation``, history entry, ``Stalled`` and ``Reconciling`` removed.
- An attempt runs when the generation was not handled yet (``lastAttemptedGeneration``) or a new
  requestedAt token arrives while the release is not Ready (a nudge). A nudge on a Ready, current
  release only records the token (nothing to upgrade).
- Faults: a *stuck* release's first attempt ends ``Ready=False`` reason ``RetriesExceeded`` with
  ``Stalled=True`` (the terminal state Cozystack users meet as "install retries exhausted") and every
  later attempt, i.e. after a requestedAt nudge or a suspend/resume (which bumps the generation),
  succeeds. A *failed* release ends every attempt ``Ready=False`` reason ``InstallFailed`` with
  ``Released=False InstallFailed`` and ``Stalled=True RetriesExceeded``, ``installFailures`` counting.
  Both record ``observedGeneration`` (a terminal error does, §4).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
CHART_VERSION = "0.0.0"


@dataclass(frozen=True)
class Faults:
    """Which releases this decision treats as stuck or failed (already matched by name)."""

    stuck: bool = False
    fail: bool = False


@dataclass(frozen=True)
class Decision:
    """The status to write (equal to the current one when nothing changes) and what the controller does.

    ``attempt`` is the identity of a running install attempt the controller must time (``None`` when no
    attempt runs); ``finish_in`` is how many seconds remain until it ends.
    """

    status: dict[str, Any]
    attempt: str | None = None
    finish_in: float | None = None


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind`` in a status, or None."""
    for cond in status.get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return None


def is_ready(obj: Mapping[str, Any] | None) -> bool:
    """Flux's dependency test: Ready=True and the current generation observed."""
    if not obj:
        return False
    status = obj.get("status") or {}
    ready = condition(status, "Ready")
    generation = (obj.get("metadata") or {}).get("generation")
    return bool(ready and ready.get("status") == "True" and status.get("observedGeneration") == generation)


def set_condition(
    status: dict[str, Any], kind: str, value: str, reason: str, message: str, generation: int, now: str
) -> None:
    """Set a condition in place; lastTransitionTime changes only when the status value changes."""
    conds: list[dict[str, Any]] = status.setdefault("conditions", [])
    for cond in conds:
        if cond.get("type") == kind:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = now
            cond.update(status=value, reason=reason, message=message, observedGeneration=generation)
            return
    conds.append(
        {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": now,
        }
    )


def drop_condition(status: dict[str, Any], kind: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind]


def decide(
    hr: Mapping[str, Any],
    dependencies: Mapping[str, Mapping[str, Any] | None],
    faults: Faults,
    *,
    elapsed: Callable[[str], float | None],
    delay: float,
    now: str,
) -> Decision:
    """Decide the next status of ``hr``.

    ``dependencies`` maps ``namespace/name`` of every ``spec.dependsOn`` entry to that HelmRelease (None
    when missing). ``elapsed(attempt)`` says how long the controller has been timing that attempt (None
    when it is not timing it: then it starts now); ``now`` is the RFC 3339 time to stamp on changes.
    """
    meta = hr.get("metadata") or {}
    spec = hr.get("spec") or {}
    status: dict[str, Any] = copy.deepcopy(dict(hr.get("status") or {}))
    generation = int(meta.get("generation") or 1)
    namespace = meta.get("namespace", "")
    token = (meta.get("annotations") or {}).get(REQUESTED_AT)
    new_token = bool(token) and token != status.get("lastHandledReconcileAt")
    if token:
        status["lastHandledReconcileAt"] = token
    if spec.get("suspend"):
        return Decision(status)

    for dep in spec.get("dependsOn") or ():
        if not isinstance(dep, Mapping) or not dep.get("name"):
            continue  # the CRD requires a name; a malformed entry cannot name a dependency
        dep_ns = dep.get("namespace") or namespace
        key = f"{dep_ns}/{dep['name']}"
        dep_obj = dependencies.get(key)
        if dep_obj is None:
            message = (
                f"unable to get '{key}' dependency: helmreleases.helm.toolkit.fluxcd.io "
                f'"{dep["name"]}" not found'
            )
        elif not is_ready(dep_obj):
            message = f"dependency '{key}' is not ready"
        else:
            continue
        if is_ready(hr) and not new_token:
            return Decision(status)  # installed and current: Flux only re-checks on the next interval
        set_condition(status, "Ready", "False", "DependencyNotReady", message, generation, now)
        return Decision(status)

    ready = condition(status, "Ready")
    released = condition(status, "Released")
    current = status.get("lastAttemptedGeneration") == generation
    in_progress = bool(condition(status, "Reconciling")) and current
    succeeded = bool(ready and ready.get("status") == "True")
    if not in_progress:
        if current and not (new_token and not succeeded):
            return Decision(status)  # handled: installed, or terminally failed and not nudged
        action = "upgrade" if released and released.get("status") == "True" else "install"
        status["lastAttemptedGeneration"] = generation
        status["lastAttemptedReleaseAction"] = action
        status["lastAttemptedRevision"] = CHART_VERSION
        status["helmChart"] = _helm_chart(hr)
        message = f"Running '{action}' action with timeout of 5m0s"
        set_condition(status, "Reconciling", "True", "Progressing", message, generation, now)
        set_condition(status, "Ready", "Unknown", "Progressing", message, generation, now)
    attempt = f"{meta.get('uid', '')}/{generation}/{status.get('lastHandledReconcileAt', '')}"
    spent = elapsed(attempt) if in_progress else 0.0
    if spent is None:
        spent = 0.0  # an attempt started by another leader (or before a restart): time it from now
    if spent < delay:
        return Decision(status, attempt=attempt, finish_in=delay - spent)
    return Decision(_finish(status, hr, faults, generation, now))


def _helm_chart(hr: Mapping[str, Any]) -> str:
    source = (((hr.get("spec") or {}).get("chart") or {}).get("spec") or {}).get("sourceRef") or {}
    meta = hr.get("metadata") or {}
    return f"{source.get('namespace', meta.get('namespace'))}/{meta.get('namespace')}-{meta.get('name')}"


def _finish(
    status: dict[str, Any], hr: Mapping[str, Any], faults: Faults, generation: int, now: str
) -> dict[str, Any]:
    meta = hr.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    chart = ((((hr.get("spec") or {}).get("chart") or {}).get("spec") or {}).get("chart")) or name
    action = status.get("lastAttemptedReleaseAction", "install")
    verb = "Install" if action == "install" else "Upgrade"
    failures = int(status.get("installFailures") or 0)
    drop_condition(status, "Reconciling")
    status["observedGeneration"] = generation
    fails = faults.fail or (faults.stuck and failures == 0)
    if fails:
        status["installFailures"] = failures + 1
        status["failures"] = int(status.get("failures") or 0) + 1
        cause = "fault fail" if faults.fail else "fault stuck"
        failed = (
            f"Helm {action} failed for release {namespace}/{name} with chart {chart}@{CHART_VERSION}: "
            f"simulated failure ({cause})"
        )
        attempts = status["installFailures"]
        stalled = f"Failed to {action} after {attempts} attempt(s)"
        set_condition(status, "Released", "False", f"{verb}Failed", failed, generation, now)
        set_condition(status, "Stalled", "True", "RetriesExceeded", stalled, generation, now)
        reason = "InstallFailed" if faults.fail else "RetriesExceeded"
        set_condition(status, "Ready", "False", reason, stalled if faults.stuck else failed, generation, now)
        return status
    history = list(status.get("history") or [])
    revision = int(history[0].get("version", 0)) + 1 if history else 1
    first = history[-1].get("firstDeployed", now) if history else now
    for entry in history:
        entry["status"] = "superseded"
    history.insert(
        0,
        {
            "name": meta.get("name"),
            "namespace": namespace,
            "version": revision,
            "status": "deployed",
            "chartName": chart,
            "chartVersion": CHART_VERSION,
            "firstDeployed": first,
            "lastDeployed": now,
        },
    )
    status["history"] = history[:5]
    release = f"{namespace}/{name}.v{revision}"
    message = f"Helm {action} succeeded for release {release} with chart {chart}@{CHART_VERSION}"
    drop_condition(status, "Stalled")
    set_condition(status, "Released", "True", f"{verb}Succeeded", message, generation, now)
    set_condition(status, "Ready", "True", f"{verb}Succeeded", message, generation, now)
    return status
