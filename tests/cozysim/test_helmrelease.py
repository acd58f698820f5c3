"""The HelmRelease state machine: dependencies, delay, observedGeneration, nudges, suspend, faults."""

from __future__ import annotations

from typing import Any

from provisioner.lab.kube.cozysim import helmrelease as hrm

NOW = "2026-12-01T22:00:00Z"
NO_FAULTS = hrm.Faults()


def NOT_TIMED(attempt: str) -> float | None:
    return None


def _hr(name: str = "b", deps: tuple[str, ...] = (), **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "generation": 1, "uid": f"uid-{name}", **meta},
        "spec": {
            "chart": {"spec": {"chart": f"cozy-{name}", "sourceRef": {"namespace": "cozy-system"}}},
            "dependsOn": [{"name": d, "namespace": "ns"} for d in deps],
        },
    }


def _run(hr: dict[str, Any], deps: dict | None = None, faults: hrm.Faults = NO_FAULTS, delay: float = 0.0):
    """Drive until nothing changes; returns the final object (status written back each step)."""
    for _ in range(10):
        decision = hrm.decide(hr, deps or {}, faults, elapsed=lambda _: delay, delay=delay, now=NOW)
        if decision.status == hr.get("status"):
            return hr
        hr = {**hr, "status": decision.status}
    return hr


def _ready(status: dict) -> tuple[str, str]:
    cond = hrm.condition(status, "Ready")
    assert cond is not None
    return cond["status"], cond["reason"]


def test_waits_for_a_missing_dependency_without_observing_the_generation() -> None:
    decision = hrm.decide(_hr(deps=("a",)), {"ns/a": None}, hrm.Faults(), elapsed=NOT_TIMED, delay=1, now=NOW)
    assert _ready(decision.status) == ("False", "DependencyNotReady")
    assert "unable to get 'ns/a' dependency" in hrm.condition(decision.status, "Ready")["message"]
    assert "observedGeneration" not in decision.status


def test_waits_for_a_dependency_that_is_not_ready() -> None:
    dep = _hr("a")
    decision = hrm.decide(_hr(deps=("a",)), {"ns/a": dep}, hrm.Faults(), elapsed=NOT_TIMED, delay=1, now=NOW)
    assert _ready(decision.status) == ("False", "DependencyNotReady")
    assert hrm.condition(decision.status, "Ready")["message"] == "dependency 'ns/a' is not ready"


def test_install_progresses_then_succeeds_after_the_delay() -> None:
    hr = _hr("a")
    started = hrm.decide(hr, {}, hrm.Faults(), elapsed=NOT_TIMED, delay=2.0, now=NOW)
    assert _ready(started.status) == ("Unknown", "Progressing")
    assert started.attempt and started.finish_in == 2.0
    hr["status"] = started.status
    halfway = hrm.decide(hr, {}, hrm.Faults(), elapsed=lambda _: 1.5, delay=2.0, now=NOW)
    assert halfway.finish_in == 0.5
    done = hrm.decide(hr, {}, hrm.Faults(), elapsed=lambda _: 2.0, delay=2.0, now=NOW)
    assert _ready(done.status) == ("True", "InstallSucceeded")
    assert done.status["observedGeneration"] == 1
    assert hrm.condition(done.status, "Reconciling") is None
    assert done.status["history"][0]["status"] == "deployed"
    assert hrm.is_ready({**hr, "status": done.status})


def test_dependent_installs_once_the_dependency_is_ready() -> None:
    dep = _run(_hr("a"))
    assert hrm.is_ready(dep)
    final = _run(_hr("b", deps=("a",)), {"ns/a": dep})
    assert _ready(final["status"]) == ("True", "InstallSucceeded")


def test_dependency_with_unobserved_generation_is_not_ready() -> None:
    dep = _run(_hr("a"))
    dep["metadata"]["generation"] = 2  # spec changed, not reconciled yet
    assert not hrm.is_ready(dep)


def test_stuck_release_stays_stuck_until_a_requested_at_nudge() -> None:
    faults = hrm.Faults(stuck=True)
    hr = _run(_hr("a"), faults=faults)
    assert _ready(hr["status"]) == ("False", "RetriesExceeded")
    assert hrm.condition(hr["status"], "Stalled")["reason"] == "RetriesExceeded"
    assert hr["status"]["observedGeneration"] == 1
    assert _run(hr, faults=faults)["status"] == hr["status"], "no nudge: nothing moves"
    hr["metadata"]["annotations"] = {hrm.REQUESTED_AT: "1764626400"}
    nudged = _run(hr, faults=faults)
    assert _ready(nudged["status"]) == ("True", "InstallSucceeded")
    assert nudged["status"]["lastHandledReconcileAt"] == "1764626400"
    assert hrm.condition(nudged["status"], "Stalled") is None


def test_failed_release_fails_again_on_every_nudge() -> None:
    faults = hrm.Faults(fail=True)
    hr = _run(_hr("a"), faults=faults)
    assert _ready(hr["status"]) == ("False", "InstallFailed")
    assert hrm.condition(hr["status"], "Released")["reason"] == "InstallFailed"
    for n in range(2, 4):
        hr["metadata"]["annotations"] = {hrm.REQUESTED_AT: f"token-{n}"}
        hr = _run(hr, faults=faults)
        assert _ready(hr["status"]) == ("False", "InstallFailed")
        assert hr["status"]["installFailures"] == n


def test_suspend_only_records_the_token_and_resume_reconciles() -> None:
    hr = _hr("a")
    hr["spec"]["suspend"] = True
    hr["metadata"]["annotations"] = {hrm.REQUESTED_AT: "t1"}
    suspended = _run(hr)
    assert suspended["status"] == {"lastHandledReconcileAt": "t1"}
    suspended["spec"]["suspend"] = False
    suspended["metadata"]["generation"] = 2
    resumed = _run(suspended)
    assert _ready(resumed["status"]) == ("True", "InstallSucceeded")
    assert resumed["status"]["observedGeneration"] == 2


def test_spec_change_upgrades_an_installed_release() -> None:
    hr = _run(_hr("a"))
    hr["metadata"]["generation"] = 2
    upgraded = _run(hr)
    assert _ready(upgraded["status"]) == ("True", "UpgradeSucceeded")
    assert upgraded["status"]["history"][0]["version"] == 2
    assert upgraded["status"]["history"][1]["status"] == "superseded"


def test_nudge_on_a_ready_release_records_the_token_only() -> None:
    hr = _run(_hr("a"))
    hr["metadata"]["annotations"] = {hrm.REQUESTED_AT: "t9"}
    decision = hrm.decide(hr, {}, hrm.Faults(), elapsed=NOT_TIMED, delay=5, now=NOW)
    assert decision.attempt is None
    assert decision.status["lastHandledReconcileAt"] == "t9"
    assert _ready(decision.status) == ("True", "InstallSucceeded")


def test_transition_time_kept_when_status_does_not_change() -> None:
    status: dict = {}
    hrm.set_condition(status, "Ready", "False", "DependencyNotReady", "m1", 1, "t1")
    hrm.set_condition(status, "Ready", "False", "DependencyNotReady", "m2", 1, "t2")
    assert status["conditions"][0]["lastTransitionTime"] == "t1"
    hrm.set_condition(status, "Ready", "True", "InstallSucceeded", "m3", 1, "t3")
    assert status["conditions"][0]["lastTransitionTime"] == "t3"


def test_malformed_dependency_entries_are_ignored() -> None:
    hr = _hr("b")
    hr["spec"]["dependsOn"] = [{"namespace": "ns"}, "a"]
    assert _ready(_run(hr)["status"]) == ("True", "InstallSucceeded")
