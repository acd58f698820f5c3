"""The HelmRelease graph: the bundle's default install, the stage record's states, what a
failed release holds up, and located errors for a malformed record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.errors import InputError
from provisioner.report.platform import bundle_releases, load


def test_bundle_graph_is_the_default_install() -> None:
    rels = bundle_releases("paas-full")
    assert len(rels) == 76  # installed by default (bundles/README.md)
    assert "cozy-keycloak/keycloak" not in rels  # OIDC-gated
    assert "cozy-velero/velero" not in rels  # optional, not enabled
    assert rels["cozy-cilium/cilium-networkpolicy"].depends == ["cozy-cilium/cilium"]
    with_velero = bundle_releases("paas-full", enable=("velero",))
    assert "cozy-velero/velero" in with_velero
    assert "cozy-cilium/cilium-networkpolicy" not in bundle_releases(
        "paas-full", disable=("cilium-networkpolicy",)
    )


def test_no_record_means_not_started(tmp_path: Path) -> None:
    view = load(tmp_path / "helmreleases.json", "distro-full")
    assert not view.from_record
    assert {r.state for r in view.releases.values()} == {"not-started"}
    depth = view.depth()
    assert depth["cozy-cilium/cilium"] == 0
    assert depth["cozy-cilium/cilium-networkpolicy"] == 1


def _record(path: Path, releases: dict[str, object]) -> Path:
    path.write_text(json.dumps({"bundle": "paas-full", "releases": releases, "updated": 1.0}))
    return path


def test_states_and_what_a_failed_release_holds_up(tmp_path: Path) -> None:
    rec = _record(
        tmp_path / "helmreleases.json",
        {
            "cozy-cilium/cilium": {
                "ready": True,
                "reason": "InstallSucceeded",
                "message": "",
                "dependsOn": [],
            },
            "cozy-kubeovn/kubeovn": {
                "ready": False,
                "reason": "InstallFailed",
                "message": "timeout",
                "dependsOn": ["cozy-cilium/cilium"],
                "blockedBy": None,
            },
            "cozy-multus/multus": {
                "ready": False,
                "reason": "DependencyNotReady",
                "message": "",
                "dependsOn": ["cozy-kubeovn/kubeovn"],
                "blockedBy": "cozy-kubeovn/kubeovn",
            },
            "cozy-cilium/cilium-networkpolicy": {"ready": None, "reason": "Progressing", "dependsOn": []},
            "cozy-kubeovn/kubeovn-webhook": {
                "ready": None,
                "reason": "NotCreated",
                "message": "the HelmRelease does not exist yet",
                "dependsOn": ["cozy-kubeovn/kubeovn"],
                "blockedBy": "cozy-kubeovn/kubeovn",
            },
            "cozy-kubeovn/kubeovn-plunger": {
                "ready": None,
                "reason": "Pending",
                "dependsOn": ["cozy-kubeovn/kubeovn"],
                "blockedBy": "cozy-kubeovn/kubeovn",
            },
        },
    )
    view = load(rec, "paas-full")
    states = {k: r.state for k, r in view.releases.items()}
    assert states["cozy-cilium/cilium"] == "ready"
    assert states["cozy-kubeovn/kubeovn"] == "failed"
    assert states["cozy-multus/multus"] == "blocked"
    assert states["cozy-cilium/cilium-networkpolicy"] == "progressing"
    assert states["cozy-dashboard/dashboard"] == "not-started"  # in the bundle, not in the record
    assert states["cozy-kubeovn/kubeovn-webhook"] == "not-started"  # recorded as not created yet
    assert states["cozy-kubeovn/kubeovn-plunger"] == "blocked"  # exists, waits on kubeovn
    holds = view.releases["cozy-kubeovn/kubeovn"].holds
    assert "cozy-multus/multus" in holds
    assert "cozy-dashboard/dashboard" in holds  # dashboard depends on kubeovn and multus
    assert {"cozy-kubeovn/kubeovn-webhook", "cozy-kubeovn/kubeovn-plunger"} <= holds
    assert "cozy-cilium/cilium" not in holds


@pytest.mark.parametrize(
    ("content", "located"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"releases": []}), "releases: expected an object"),
        (
            json.dumps({"releases": {"nonamespace": {}}}),
            "releases.nonamespace: expected a '<namespace>/<name>'",
        ),
        (
            json.dumps({"releases": {"a/b": {"ready": "yes"}}}),
            "releases.a/b.ready: expected true, false or null",
        ),
        (json.dumps({"releases": {"a/b": {"dependsOn": "x"}}}), "releases.a/b.dependsOn"),
        (json.dumps({"releases": {"a/b": {"blockedBy": 3}}}), "releases.a/b.blockedBy"),
        (json.dumps({"releases": {"a/b": {"reason": 3}}}), "releases.a/b.reason: expected a string"),
        (json.dumps({"releases": {}, "updated": "today"}), "updated: expected a number"),
    ],
)
def test_malformed_record_names_file_and_field(tmp_path: Path, content: str, located: str) -> None:
    rec = tmp_path / "helmreleases.json"
    rec.write_text(content)
    with pytest.raises(InputError) as err:
        load(rec, "paas-full")
    assert str(rec) in str(err.value)
    assert located in str(err.value)


def test_dependency_cycle_in_the_record_is_an_error(tmp_path: Path) -> None:
    rec = _record(
        tmp_path / "helmreleases.json",
        {"x/a": {"ready": None, "dependsOn": ["x/b"]}, "x/b": {"ready": None, "dependsOn": ["x/a"]}},
    )
    view = load(rec, "distro-hosted")
    with pytest.raises(InputError, match="cycle"):
        view.depth()
