"""Stuck and failed releases, suspend, the v0 render refusal, the v1 Package contract, bad CLI input."""

from __future__ import annotations

import subprocess
import sys
import time

from cozysim_lab import PAAS, condition, is_ready, lab_cluster, wait_for

from provisioner.lab.kube.cozysim import kinds

REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def test_stuck_release_stays_stuck_until_a_requested_at_nudge_and_failed_fails_for_good() -> None:
    faults = "seed=1,stuck=cert-manager-crds,fail=cozy-victoria-metrics-operator/prometheus-operator-crds"
    with lab_cluster(delay=0.05, faults=faults) as lab:
        lab.install_v0({"bundle-name": "distro-hosted"})

        def get(name: str, ns: str) -> dict | None:
            return lab.get(kinds.HELMRELEASE, name, ns)

        stuck = wait_for(
            "cert-manager-crds to be stuck",
            lambda: (
                (hr := get("cert-manager-crds", "cozy-cert-manager"))
                and condition(hr).get("reason") == "RetriesExceeded"
                and hr
            ),
            lab,
        )
        assert condition(stuck)["status"] == "False"
        assert condition(stuck, "Stalled")["reason"] == "RetriesExceeded"
        wait_for(
            "an unrelated release to install",
            lambda: is_ready(get("cozystack-controller", "cozy-system")),
            lab,
        )
        time.sleep(1.0)  # 20 install delays: a stuck release does not heal by itself
        assert condition(get("cert-manager-crds", "cozy-cert-manager"))["reason"] == "RetriesExceeded"
        assert condition(get("cert-manager", "cozy-cert-manager"))["reason"] == "DependencyNotReady"

        lab.merge(
            kinds.HELMRELEASE,
            "cert-manager-crds",
            {"metadata": {"annotations": {REQUESTED_AT: "nudge-1"}}},
            "cozy-cert-manager",
        )
        healed = wait_for(
            "cert-manager-crds to succeed after the nudge",
            lambda: (hr := get("cert-manager-crds", "cozy-cert-manager")) and is_ready(hr) and hr,
            lab,
        )
        assert healed["status"]["lastHandledReconcileAt"] == "nudge-1"
        assert condition(healed, "Stalled") == {}
        wait_for(
            "the dependents of the healed release",
            lambda: is_ready(get("lineage-controller-webhook", "cozy-system")),
            lab,
        )

        failed = wait_for(
            "prometheus-operator-crds to fail",
            lambda: (
                (hr := get("prometheus-operator-crds", "cozy-victoria-metrics-operator"))
                and condition(hr).get("reason") == "InstallFailed"
                and hr
            ),
            lab,
        )
        assert condition(failed, "Released")["reason"] == "InstallFailed"
        lab.merge(
            kinds.HELMRELEASE,
            "prometheus-operator-crds",
            {"metadata": {"annotations": {REQUESTED_AT: "nudge-2"}}},
            "cozy-victoria-metrics-operator",
        )
        again = wait_for(
            "the failed release to fail again",
            lambda: (
                (hr := get("prometheus-operator-crds", "cozy-victoria-metrics-operator"))
                and hr["status"].get("installFailures") == 2
                and hr
            ),
            lab,
        )
        assert condition(again)["reason"] == "InstallFailed"
        assert again["status"]["lastHandledReconcileAt"] == "nudge-2"
        assert condition(get("metrics-server", "cozy-monitoring"))["reason"] == "DependencyNotReady"


def test_suspended_release_waits_and_resumes() -> None:
    with lab_cluster(delay=0.05, faults="stuck=cozystack-controller") as lab:
        lab.install_v0({"bundle-name": "distro-hosted"})
        wait_for(
            "cozystack-controller to be stuck",
            lambda: (
                condition(lab.get(kinds.HELMRELEASE, "cozystack-controller", "cozy-system")).get("reason")
                == "RetriesExceeded"
            ),
            lab,
        )
        lab.merge(kinds.HELMRELEASE, "cozystack-controller", {"spec": {"suspend": True}}, "cozy-system")
        time.sleep(0.5)
        suspended = lab.get(kinds.HELMRELEASE, "cozystack-controller", "cozy-system")
        assert condition(suspended)["reason"] == "RetriesExceeded", "suspended: nothing reconciles"
        lab.merge(kinds.HELMRELEASE, "cozystack-controller", {"spec": {"suspend": False}}, "cozy-system")
        resumed = wait_for(
            "the resumed release to install (suspend/resume is Cozystack's documented fix)",
            lambda: (
                (hr := lab.get(kinds.HELMRELEASE, "cozystack-controller", "cozy-system"))
                and is_ready(hr)
                and hr
            ),
            lab,
        )
        assert resumed["status"]["observedGeneration"] == resumed["metadata"]["generation"] == 3


def test_paas_bundle_without_root_host_is_refused_visibly_then_renders_when_fixed() -> None:
    with lab_cluster(delay=0.02) as lab:
        lab.install_v0({"bundle-name": "paas-hosted", "api-server-endpoint": PAAS["api-server-endpoint"]})
        installer = wait_for(
            "the installer Deployment to report the render failure",
            lambda: (
                (d := lab.get(kinds.DEPLOYMENT, "cozystack", "cozy-system"))
                and condition(d, "Available").get("reason") == "RenderFailed"
                and d
            ),
            lab,
        )
        available = condition(installer, "Available")
        assert available["status"] == "False"
        assert "ERROR need root-host in cozystack ConfigMap" in available["message"]
        assert installer["status"]["unavailableReplicas"] == 1
        events = wait_for(
            "the RenderFailed Event",
            lambda: [e for e in lab.list(kinds.EVENT, "cozy-system") if e.get("reason") == "RenderFailed"],
            lab,
        )
        assert events[0]["type"] == "Warning"
        assert events[0]["involvedObject"]["name"] == "cozystack"
        assert "need root-host" in events[0]["message"]
        assert lab.get(kinds.CRD, "helmreleases.helm.toolkit.fluxcd.io") is None, "rendering comes first"
        assert lab.list(kinds.HELMRELEASE) == []

        lab.merge(kinds.CONFIGMAP, "cozystack", {"data": {"root-host": "example.org"}}, "cozy-system")
        wait_for(
            "the installer to recover",
            lambda: (
                condition(lab.get(kinds.DEPLOYMENT, "cozystack", "cozy-system"), "Available").get("status")
                == "True"
            ),
            lab,
        )
        wait_for("HelmReleases to be rendered", lambda: len(lab.list(kinds.HELMRELEASE)) >= 52, lab)


def test_v1_package_renders_releases_and_is_ready_once_they_are_created() -> None:
    operator = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cozystack-operator", "namespace": "cozy-system"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "cozystack-operator"}},
            "template": {
                "metadata": {"labels": {"app": "cozystack-operator"}},
                "spec": {"containers": [{"name": "operator", "image": "operator"}]},
            },
        },
    }
    with lab_cluster(delay=60.0) as lab:  # slow installs: Ready must not wait for them
        lab.apply(
            kinds.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cozy-system"}}
        )
        lab.apply(kinds.DEPLOYMENT, operator)
        wait_for("the Package CRD", lambda: lab.get(kinds.CRD, "packages.cozystack.io"), lab)
        wait_for(
            "the PackageSource", lambda: lab.get(kinds.PACKAGESOURCE, "cozystack.cozystack-platform"), lab
        )

        def package(variant: str) -> dict:
            values = {"publishing": {"host": "example.org", "apiServerEndpoint": "https://127.0.0.1:6443"}}
            return {
                "apiVersion": "cozystack.io/v1alpha1",
                "kind": "Package",
                "metadata": {"name": "cozystack.cozystack-platform"},
                "spec": {"variant": variant, "components": {"platform": {"values": values}}},
            }

        lab.apply(kinds.PACKAGE, package("isp-nonsense"))
        refused = wait_for(
            "the unknown variant to be refused",
            lambda: (
                (p := lab.get(kinds.PACKAGE, "cozystack.cozystack-platform"))
                and condition(p).get("reason") == "VariantNotFound"
                and p
            ),
            lab,
        )
        assert condition(refused)["status"] == "False"
        lab.apply(kinds.PACKAGE, package("isp-hosted"))
        ready = wait_for(
            "the Package to be Ready",
            lambda: (
                (p := lab.get(kinds.PACKAGE, "cozystack.cozystack-platform"))
                and condition(p).get("status") == "True"
                and p
            ),
            lab,
        )
        assert condition(ready)["reason"] == "ReconciliationSucceeded"
        assert "generated 52 helmrelease(s)" in condition(ready)["message"]
        releases = lab.list(kinds.HELMRELEASE)
        assert len(releases) == 52  # paas-hosted list (51) + tenant-root
        assert not any(is_ready(hr) for hr in releases), "Package Ready does not mean releases are healthy"


def test_bad_command_line_exits_2_naming_the_option(tmp_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "provisioner.lab.kube.cozysim", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    missing = run("--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "--kubeconfig" in missing.stderr and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    junk = tmp_path / "kubeconfig"
    junk.write_text("just: [text\n")
    broken = run("--kubeconfig", str(junk))
    assert broken.returncode == 2 and "not a usable kubeconfig" in broken.stderr
    assert "Traceback" not in broken.stderr
    bad_faults = run("--kubeconfig", str(junk), "--faults", "bogus=1")
    assert bad_faults.returncode == 2 and "--faults" in bad_faults.stderr and "bogus" in bad_faults.stderr
    negative = run("--kubeconfig", str(junk), "--delay", "-1")
    assert negative.returncode == 2 and "--delay" in negative.stderr
