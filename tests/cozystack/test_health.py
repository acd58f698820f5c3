"""The judging rules: HelmRelease state, root cause, nudges, KubeVirt/CDI, pools, tenant labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from platform_sites import data, load

from provisioner.cozystack import health
from provisioner.cozystack.releases import ExpectedRelease, expected_releases
from provisioner.tenants import tree_for


def hr(
    ready: str | None, reason: str = "", message: str = "", gen: int = 1, observed: int = 1, **extra: Any
) -> dict:
    conds = (
        [] if ready is None else [{"type": "Ready", "status": ready, "reason": reason, "message": message}]
    )
    conds += [{"type": t, "status": "True", "reason": r} for t, r in extra.items()]
    return {"metadata": {"generation": gen}, "status": {"observedGeneration": observed, "conditions": conds}}


def test_release_state_needs_a_current_generation() -> None:
    assert health.release_state(hr("True", "InstallSucceeded")).ready is True
    stale = health.release_state(hr("True", "InstallSucceeded", gen=2, observed=1))
    assert stale.ready is None and "generation 2" in stale.message
    assert health.release_state(None).reason == "NotCreated"
    failed = health.release_state(hr("False", "InstallFailed", "boom"))
    assert (failed.ready, failed.reason, failed.message) == (False, "InstallFailed", "boom")
    stalled = health.release_state(hr("False", "InstallFailed", "x", Stalled="RetriesExceeded"))
    assert stalled.stalled and stalled.reason == "RetriesExceeded"
    assert health.release_state(hr("Unknown", "Progressing")).ready is None


def test_root_cause_not_cascade() -> None:
    exp = {
        "a/base": ExpectedRelease("a/base"),
        "a/mid": ExpectedRelease("a/mid", ("a/base",)),
        "a/top": ExpectedRelease("a/top", ("a/mid", "a/ok")),
        "a/ok": ExpectedRelease("a/ok"),
        "a/other": ExpectedRelease("a/other", ("a/ok",)),
    }
    states = {
        "a/base": health.release_state(hr("False", "InstallFailed", "chart error")),
        "a/mid": health.release_state(hr("False", "DependencyNotReady", "dependency 'a/base' is not ready")),
        "a/top": health.release_state(hr("False", "DependencyNotReady")),
        "a/ok": health.release_state(hr("True", "InstallSucceeded")),
        "a/other": health.release_state(hr("Unknown", "Progressing")),
    }
    record = health.release_record(exp, states)
    assert record["a/base"]["blockedBy"] is None and record["a/base"]["ready"] is False
    assert record["a/mid"]["blockedBy"] == "a/base"
    assert record["a/top"]["blockedBy"] == "a/base"
    assert record["a/other"]["blockedBy"] is None
    assert record["a/top"]["dependsOn"] == ["a/mid", "a/ok"]
    lines = health.failure_summary(record)
    assert lines[0] == "a/base: InstallFailed: chart error (blocks 2: a/mid, a/top)"
    assert len(lines) == 2  # the base failure and the release still progressing, not the cascade
    assert health.progress_line(record).startswith("HelmReleases 1/5 ready — waiting: base (InstallFailed)")


def test_root_cause_on_the_real_paas_full_graph() -> None:
    exp = expected_releases("paas-full")
    states = {k: health.release_state(hr("True", "InstallSucceeded")) for k in exp}
    states["cozy-cilium/cilium"] = health.release_state(hr("False", "InstallFailed", "x"))
    for k, r in exp.items():
        if "cozy-cilium/cilium" in r.depends_on:
            states[k] = health.release_state(hr("False", "DependencyNotReady"))
    record = health.release_record(exp, states)
    blocked = [k for k, r in record.items() if r["blockedBy"] == "cozy-cilium/cilium"]
    assert len(blocked) > 10
    assert len(health.failure_summary(record)) == 1


def test_dependency_cycle_terminates() -> None:
    exp = {"a/x": ExpectedRelease("a/x", ("a/y",)), "a/y": ExpectedRelease("a/y", ("a/x",))}
    states = {k: health.release_state(hr("False", "DependencyNotReady")) for k in exp}
    assert set(health.blocked_by(exp, states)) == {"a/x", "a/y"}


def test_nudges_are_bounded_and_alternate() -> None:
    policy = health.NudgePolicy(max_nudges=3, interval=10, stuck_for=5)
    stuck = health.release_state(hr("False", "InstallFailed"))
    waiting = health.release_state(hr("False", "DependencyNotReady"))
    assert policy.next_action("a/w", waiting, 0) is None
    assert policy.next_action("a/x", stuck, 0) is None  # not stuck long enough yet
    assert policy.next_action("a/x", stuck, 6) == "reconcile"
    assert policy.next_action("a/x", stuck, 8) is None  # interval
    assert policy.next_action("a/x", stuck, 17) == "suspend-resume"
    assert policy.next_action("a/x", stuck, 28) == "reconcile"
    assert policy.next_action("a/x", stuck, 100) is None and policy.exhausted("a/x")


def test_kubevirt_deployed_phase_is_not_health() -> None:
    def kv(phase: str, avail: str, prog: str, deg: str, gen: int = 3, observed: int = 3) -> dict:
        conds = [
            {
                "type": "Available",
                "status": avail,
                "reason": "DeploymentFailed",
                "message": "virt-handler down",
            },
            {"type": "Progressing", "status": prog},
            {"type": "Degraded", "status": deg},
        ]
        return {
            "metadata": {"generation": gen},
            "status": {"phase": phase, "observedGeneration": observed, "conditions": conds},
        }

    assert health.operator_cr_health(kv("Deployed", "True", "False", "False"), "KubeVirt") == []
    broken = health.operator_cr_health(kv("Deployed", "False", "False", "True"), "KubeVirt")
    assert any("Available=False" in p and "virt-handler down" in p for p in broken)
    assert any(p.startswith("Degraded=True") for p in broken)
    stale = health.operator_cr_health(kv("Deployed", "True", "False", "False", gen=4), "KubeVirt")
    assert stale == ["observedGeneration 3 is not generation 4"]
    assert health.operator_cr_health(None, "CDI") == ["CDI does not exist yet"]


def test_satellite_pools_named_per_node() -> None:
    def sat(configured: str, pools: list[str], msg: str = "") -> dict:
        return {
            "spec": {"storagePools": [{"name": p} for p in pools]},
            "status": {
                "conditions": [
                    {"type": "Available", "status": "True"},
                    {"type": "Configured", "status": configured, "message": msg},
                    {"type": "Applied", "status": "True"},
                ]
            },
        }

    sats = {
        "n1": sat("True", ["data"]),
        "n2": sat("False", ["data"], "Error: /dev/sdb: no such device"),
        "n3": sat("True", []),
    }
    problems = health.satellite_problems(sats, ["n1", "n2", "n3", "n4"], "data")
    assert set(problems) == {"n2", "n3", "n4"}
    assert "/dev/sdb: no such device" in problems["n2"]
    assert "not in the satellite's storagePools" in problems["n3"]
    assert "no LinstorSatellite" in problems["n4"]


def test_a_satellite_condition_from_an_older_spec_proves_nothing() -> None:
    """The operator merged the pool into the spec (generation 3) but its conditions still say
    what it saw at generation 2 (no pools, so "configured"): not ready until it observes 3."""

    def sat(observed: int) -> dict:
        return {
            "metadata": {"generation": 3},
            "spec": {"storagePools": [{"name": "data"}]},
            "status": {
                "conditions": [
                    {"type": "Available", "status": "True", "observedGeneration": observed},
                    {"type": "Configured", "status": "True", "observedGeneration": observed},
                ]
            },
        }

    stale = health.satellite_problems({"n1": sat(2)}, ["n1"], "data")
    assert stale["n1"].startswith("Available: observedGeneration 2 is not generation 3")
    assert "Configured: observedGeneration 2 is not generation 3" in stale["n1"]
    assert health.satellite_problems({"n1": sat(3)}, ["n1"], "data") == {}


def test_tenant_labels_compared_with_the_model(tmp_path: Path) -> None:
    root = tree_for(load(tmp_path, data()).site)
    namespaces = {
        n.namespace: {"metadata": {"name": n.namespace, "labels": {**n.namespace_labels(), "other": "x"}}}
        for n in root.walk()
    }
    # v1.x: exactly the model's resolution (no tenant enables seaweedfs: no label)
    assert health.tenant_label_problems(root, namespaces, root_fallback=False) == []
    # v0.x: tenant-root carries all four services whatever its spec, and children inherit
    assert health.expected_tenant_labels(root)["namespace.cozystack.io/seaweedfs"] == "tenant-root"
    missing = health.tenant_label_problems(root, namespaces)
    assert len(missing) == 3 and all("seaweedfs is None" in m for m in missing)
    for n in root.walk():
        namespaces[n.namespace]["metadata"]["labels"] = health.expected_tenant_labels(n)
    assert health.tenant_label_problems(root, namespaces) == []
    namespaces["tenant-team-dev"]["metadata"]["labels"]["namespace.cozystack.io/ingress"] = "tenant-root"
    problems = health.tenant_label_problems(root, namespaces)
    assert problems == [
        "tenant team/dev (tenant-team-dev): label namespace.cozystack.io/ingress is 'tenant-root', "
        "the inventory resolves 'tenant-team'"
    ]
    del namespaces["tenant-team"]
    assert any(
        "namespace tenant-team does not exist" in p for p in health.tenant_label_problems(root, namespaces)
    )
