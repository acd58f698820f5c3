"""CRD serving, the aggregated Tenant API, and watches (resume, bookmarks, timeout, 410 Gone)."""

from __future__ import annotations

import threading
import time

import pytest
from kube_helpers import Raw
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def test_crd_is_served_at_once_and_removed_with_it(raw: Raw, ns: str) -> None:
    code, _, _ = raw.request("GET", f"/apis/example.com/v1/namespaces/{ns}/gadgets")
    assert code == 404
    code, _, crd = raw.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert code == 201
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    body = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"size": 1}}
    code, _, doc = raw.request("POST", f"/apis/example.com/v1/namespaces/{ns}/gadgets", body)
    assert code == 201 and doc["kind"] == "Gadget" and doc["metadata"]["generation"] == 1
    _, _, disc = raw.request("GET", "/apis/example.com/v1")
    assert {r["name"] for r in disc["resources"]} == {"gadgets", "gadgets/status"}
    code, _, doc = raw.request(
        "PATCH",
        f"/apis/example.com/v1/namespaces/{ns}/gadgets/g1/status",
        {"status": {"phase": "Ready"}, "spec": {"size": 5}},
        "application/merge-patch+json",
    )
    assert code == 200 and doc["status"] == {"phase": "Ready"} and doc["spec"] == {"size": 1}
    code, _, _ = raw.request(
        "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com"
    )
    assert code == 200
    code, _, _ = raw.request("GET", f"/apis/example.com/v1/namespaces/{ns}/gadgets/g1")
    assert code == 404
    raw.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    code, _, doc = raw.request("GET", f"/apis/example.com/v1/namespaces/{ns}/gadgets")
    assert code == 200 and doc["items"] == [], "objects of a deleted CRD came back with it"
    raw.request("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com")


def test_lightkube_generic_resource_on_a_crd(client: Client, raw: Raw, ns: str) -> None:
    crd = {**CRD, "metadata": {"name": "sprockets.example.com"}}
    crd["spec"] = {
        **CRD["spec"],
        "names": {"plural": "sprockets", "singular": "sprocket", "kind": "Sprocket"},
    }
    assert raw.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
    sprocket = create_namespaced_resource("example.com", "v1", "Sprocket", "sprockets")
    client.apply(
        sprocket(metadata=ObjectMeta(name="s1", namespace=ns), spec={"teeth": 12}), field_manager="t"
    )
    got = client.get(sprocket, "s1", namespace=ns)
    assert got.spec == {"teeth": 12}
    client.apply(
        sprocket(metadata=ObjectMeta(name="s1", namespace=ns), spec={"teeth": 14}), field_manager="t"
    )
    assert client.get(sprocket, "s1", namespace=ns).metadata.generation == 2
    raw.request("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sprockets.example.com")


APISERVICE = {
    "apiVersion": "apiregistration.k8s.io/v1",
    "kind": "APIService",
    "metadata": {"name": "v1alpha1.apps.cozystack.io"},
    "spec": {
        "group": "apps.cozystack.io",
        "version": "v1alpha1",
        "groupPriorityMinimum": 1000,
        "versionPriority": 15,
    },
}


def test_tenant_api_follows_its_apiservice(raw: Raw, ns: str) -> None:
    url = f"/apis/apps.cozystack.io/v1alpha1/namespaces/{ns}/tenants"
    tenant = {
        "apiVersion": "apps.cozystack.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "foo"},
        "spec": {"monitoring": True},
    }
    assert raw.request("POST", url, tenant)[0] == 404
    assert raw.request("POST", "/apis/apiregistration.k8s.io/v1/apiservices", APISERVICE)[0] == 201
    try:
        code, _, doc = raw.request("POST", url, tenant)
        assert code == 201 and doc["kind"] == "Tenant" and doc["metadata"]["namespace"] == ns
        code, _, doc = raw.request("POST", url, {**tenant, "metadata": {"name": "with-dash"}})
        assert code == 422 and doc["reason"] == "Invalid" and doc["kind"] == "Status"
        assert doc["details"]["causes"][0]["field"] == "metadata.name"
        assert doc["details"]["kind"] == "Tenant" and doc["details"]["group"] == "apps.cozystack.io"
        code, _, doc = raw.request(
            "PATCH",
            f"{url}/with-dash?fieldManager=t",
            {**tenant, "metadata": {"name": "with-dash"}},
            "application/apply-patch+yaml",
        )
        assert code == 422
        _, _, groups = raw.request("GET", "/apis")
        assert "apps.cozystack.io" in {g["name"] for g in groups["groups"]}
    finally:
        raw.request("DELETE", "/apis/apiregistration.k8s.io/v1/apiservices/v1alpha1.apps.cozystack.io")
    assert raw.request("GET", url)[0] == 404


def test_watch_from_resource_version_with_selector(client: Client, raw: Raw, ns: str) -> None:
    start = client.create(ConfigMap(metadata=ObjectMeta(name="w0", namespace=ns), data={}))
    rv = start.metadata.resourceVersion
    client.create(ConfigMap(metadata=ObjectMeta(name="w1", namespace=ns, labels={"pick": "yes"}), data={}))
    client.create(ConfigMap(metadata=ObjectMeta(name="w2", namespace=ns), data={}))
    client.patch(ConfigMap, "w1", {"data": {"a": "b"}}, namespace=ns)
    client.delete(ConfigMap, "w1", namespace=ns)
    events = raw.stream_lines(
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1&labelSelector=pick%3Dyes"
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w1"),
        ("MODIFIED", "w1"),
        ("DELETED", "w1"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    # resume after the second event: only what followed it
    again = raw.stream_lines(
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rvs[1]}&timeoutSeconds=1&labelSelector=pick%3Dyes"
    )
    assert [e["type"] for e in again] == ["DELETED"]


def test_watch_without_version_lists_first_then_streams(client: Client, raw: Raw, ns: str) -> None:
    client.create(ConfigMap(metadata=ObjectMeta(name="old", namespace=ns), data={}))
    result: list[dict[str, object]] = []
    t = threading.Thread(
        target=lambda: result.extend(
            raw.stream_lines(f"/api/v1/namespaces/{ns}/configmaps?watch=true&timeoutSeconds=2")
        )
    )
    t.start()
    time.sleep(0.7)
    client.create(ConfigMap(metadata=ObjectMeta(name="new", namespace=ns), data={}))
    t.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in result] == [
        ("ADDED", "old"),
        ("ADDED", "new"),
    ]


def test_watch_timeout_and_bookmarks(client: Client, raw: Raw, ns: str) -> None:
    rv = client.create(
        ConfigMap(metadata=ObjectMeta(name="b0", namespace=ns), data={})
    ).metadata.resourceVersion
    url = f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2"
    started = time.monotonic()
    events = raw.stream_lines(url + "&allowWatchBookmarks=true")
    elapsed = time.monotonic() - started
    assert 1.8 <= elapsed < 6, "timeoutSeconds not honoured"
    assert events and {e["type"] for e in events} == {"BOOKMARK"}  # the session server bookmarks every 0.5 s
    assert events[0]["object"]["kind"] == "ConfigMap"
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    assert raw.stream_lines(url) == [], "bookmarks sent without allowWatchBookmarks"


def test_lightkube_watch_resumes(client: Client, ns: str) -> None:
    first = client.create(ConfigMap(metadata=ObjectMeta(name="r1", namespace=ns), data={}))
    client.create(ConfigMap(metadata=ObjectMeta(name="r2", namespace=ns), data={}))
    seen = []
    for typ, obj in client.watch(ConfigMap, namespace=ns, resource_version=first.metadata.resourceVersion):
        seen.append((typ, obj.metadata.name))
        break
    assert seen == [("ADDED", "r2")]


def test_watch_from_compacted_revision_is_410(client: Client, raw: Raw, ns: str) -> None:
    old = client.create(ConfigMap(metadata=ObjectMeta(name="c0", namespace=ns), data={}))
    client.patch(ConfigMap, "c0", {"data": {"x": "1"}}, namespace=ns)
    code, _, doc = raw.request("POST", "/stand-in/compact")
    assert code == 200 and doc["compacted"] > int(old.metadata.resourceVersion)
    events = raw.stream_lines(
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={int(old.metadata.resourceVersion) - 1}"
        "&timeoutSeconds=5"
    )
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    with pytest.raises(ApiError) as err:
        for _ in client.watch(
            ConfigMap, namespace=ns, resource_version=str(int(old.metadata.resourceVersion) - 1)
        ):
            pass
    assert err.value.status.code == 410
