"""Unit tests of the stand-in's pure parts: selectors, patches, managed fields, resource catalog."""

from __future__ import annotations

import pytest

from provisioner.lab.kube import managed
from provisioner.lab.kube.discovery import version_doc
from provisioner.lab.kube.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from provisioner.lab.kube.resources import Catalog
from provisioner.lab.kube.selectors import SelectorError, parse_fields, parse_labels


def obj(**labels: str) -> dict[str, object]:
    return {"metadata": {"name": "n", "namespace": "ns", "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a notin (1,2)", {"a": "3"}, True),
        ("a notin (1,2)", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("a=1,b in (x),!c", {"a": "1", "b": "x"}, True),
        ("a=1,b in (x),!c", {"a": "1", "b": "x", "c": "y"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    match = parse_labels(selector)
    assert match is not None and match(obj(**labels)) is expected


def test_selector_errors_and_fields() -> None:
    assert parse_labels("") is None and parse_fields(None) is None
    with pytest.raises(SelectorError):
        parse_labels("a in 1")
    with pytest.raises(SelectorError, match="field label not supported"):
        parse_fields("status.phase=Running")
    f = parse_fields("metadata.name=n,metadata.namespace!=other")
    assert f is not None and f(obj()) and not f({"metadata": {"name": "m", "namespace": "ns"}})


def test_patches() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {
        "a": {"c": 2},
        "l": [2],
    }
    doc = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "remove", "path": "/b/c"},
            {"op": "move", "from": "/a/0", "path": "/b/x"},
        ],
    ) == {"a": [2, 3], "b": {"x": 1}}
    assert doc == {"a": [1, 2], "b": {"c": 1}}, "json_patch changed its input"
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "replace", "path": "/missing", "value": 1}])
    base = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}], "args": ["x"]}
    out = strategic_merge_patch(
        base, {"containers": [{"name": "b", "image": "2"}, {"name": "a", "$patch": "delete"}], "args": ["y"]}
    )
    assert out == {"containers": [{"name": "b", "image": "2"}], "args": ["y"]}
    conds = strategic_merge_patch(
        {"conditions": [{"type": "Ready", "status": "False"}]},
        {"conditions": [{"type": "Synced", "status": "True"}]},
    )
    assert [c["type"] for c in conds["conditions"]] == ["Ready", "Synced"]


def test_fields_v1_round_trip_and_apply_semantics() -> None:
    paths = {("data", "a"), ("metadata", "labels", "x"), ("spec", "list")}
    assert managed.decode(managed.encode(paths)) == paths
    assert managed.encode({("data", "a")}) == {"f:data": {"f:a": {}}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
    one = managed.apply(None, cm, "m1", False, "v1")
    two = managed.apply(one, {**cm, "data": {"a": "1"}}, "m2", False, "v1")  # shared value: no conflict
    with pytest.raises(managed.ApplyConflict) as err:
        managed.apply(two, {**cm, "data": {"b": "9"}}, "m2", False, "v1")
    assert err.value.conflicts == [("m1", ("data", "b"))]
    three = managed.apply(two, {**cm, "data": {"b": "9"}}, "m2", True, "v1")
    assert three["data"] == {"a": "1", "b": "9"}  # m2 dropped a, but m1 still owns it
    owners = {e["manager"]: managed.decode(e["fieldsV1"]) for e in three["metadata"]["managedFields"]}
    assert owners == {"m1": {("data", "a")}, "m2": {("data", "b")}}


def test_catalog_serves_crd_versions_and_tenants() -> None:
    cat = Catalog()
    assert cat.lookup("example.com", "v1", "things") is None
    crd = {
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": True}, {"name": "v0", "served": False}],
        }
    }
    cat.set_dynamic([crd], tenants=True)
    thing = cat.lookup("example.com", "v1", "things")
    assert (
        thing is not None
        and not thing.namespaced
        and thing.key(None, "x") == "/registry/example.com/things/x"
    )
    assert cat.lookup("example.com", "v0", "things") is None
    assert cat.lookup("apps.cozystack.io", "v1alpha1", "tenants") is not None
    assert version_doc("v1.33.2")["gitVersion"] == "v1.33.2+provisioner-stand-in"
