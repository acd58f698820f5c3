"""Contract of the API server stand-in, driven with lightkube and raw HTTPS: verbs, Status bodies,
selectors, paging, patches, server-side apply, status separation, finalizers, namespaces."""

from __future__ import annotations

import time

import pytest
from kube_helpers import Raw
from lightkube import ApiError, Client
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret
from lightkube.types import PatchType


def cm(name: str, ns: str, labels: dict[str, str] | None = None, **data: str) -> ConfigMap:
    return ConfigMap(metadata=ObjectMeta(name=name, namespace=ns, labels=labels), data=data or {"k": "v"})


def deployment(name: str, ns: str, replicas: int = 1) -> Deployment:
    return Deployment(
        metadata=ObjectMeta(name=name, namespace=ns),
        spec=DeploymentSpec(
            replicas=replicas,
            selector=LabelSelector(matchLabels={"app": name}),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels={"app": name}),
                spec=PodSpec(containers=[Container(name="main", image="busybox:1")]),
            ),
        ),
    )


def test_version_says_stand_in(raw: Raw) -> None:
    code, headers, doc = raw.request("GET", "/version")
    assert code == 200 and headers["content-type"] == "application/json"
    assert doc["gitVersion"] == "v1.34.1+provisioner-stand-in"
    assert (doc["major"], doc["minor"]) == ("1", "34")


def test_discovery_lists_builtin_groups(raw: Raw) -> None:
    _, _, groups = raw.request("GET", "/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "coordination.k8s.io"} <= names
    _, _, core = raw.request("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["configmaps"]["namespaced"] and not by_name["nodes"]["namespaced"]
    assert "namespaces/status" in by_name


def test_create_get_and_already_exists(client: Client, raw: Raw, ns: str) -> None:
    created = client.create(cm("a", ns))
    assert created.metadata.uid and created.metadata.resourceVersion
    assert created.metadata.creationTimestamp is not None
    code, headers, doc = raw.request("POST", f"/api/v1/namespaces/{ns}/configmaps", cm("a", ns).to_dict())
    assert code == 409 and headers["content-type"] == "application/json"
    assert doc["kind"] == "Status" and doc["reason"] == "AlreadyExists" and doc["code"] == 409
    assert doc["details"]["name"] == "a" and doc["details"]["kind"] == "configmaps"
    code, _, doc = raw.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "b"}})
    assert code == 201 and doc["kind"] == "ConfigMap"
    assert client.get(ConfigMap, "a", namespace=ns).data == {"k": "v"}


def test_not_found_status_body(raw: Raw, ns: str) -> None:
    code, headers, doc = raw.request("GET", f"/api/v1/namespaces/{ns}/configmaps/missing")
    assert code == 404 and headers["content-type"] == "application/json"
    assert doc == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "missing" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "missing", "group": "", "kind": "configmaps"},
    }
    code, _, doc = raw.request("GET", "/apis/nothing.example.com/v1/things")
    assert code == 404 and doc["reason"] == "NotFound"


def test_create_in_missing_namespace_is_404(client: Client) -> None:
    with pytest.raises(ApiError) as err:
        client.create(cm("x", "no-such-namespace"))
    assert err.value.status.code == 404
    assert err.value.status.message == 'namespaces "no-such-namespace" not found'


def test_generate_name(raw: Raw, ns: str) -> None:
    code, _, doc = raw.request(
        "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"generateName": "gen-"}, "data": {}}
    )
    assert code == 201 and doc["metadata"]["name"].startswith("gen-") and len(doc["metadata"]["name"]) > 4


def test_invalid_name_is_422(raw: Raw, ns: str) -> None:
    code, _, doc = raw.request(
        "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "Bad_Name"}}
    )
    assert code == 422 and doc["reason"] == "Invalid"
    assert doc["details"]["causes"][0]["field"] == "metadata.name"


def test_label_and_field_selectors(client: Client, raw: Raw, ns: str) -> None:
    client.create(cm("one", ns, {"tier": "web", "env": "prod"}))
    client.create(cm("two", ns, {"tier": "db", "env": "prod"}))
    client.create(cm("three", ns, {"tier": "web"}))

    def names(**kw: object) -> set[str]:
        return {o.metadata.name for o in client.list(ConfigMap, namespace=ns, **kw)}  # type: ignore[arg-type]

    assert names(labels={"tier": "web"}) == {"one", "three"}
    assert names(labels={"tier": "web", "env": "prod"}) == {"one"}
    q = "/api/v1/namespaces/{}/configmaps?labelSelector={}"
    for selector, want in [
        ("tier%20in%20(web,db)", {"one", "two", "three"}),
        ("tier%20notin%20(web)", {"two"}),
        ("env", {"one", "two"}),
        ("!env", {"three"}),
        ("tier!=web", {"two"}),
    ]:
        _, _, doc = raw.request("GET", q.format(ns, selector))
        assert {i["metadata"]["name"] for i in doc["items"]} == want, selector
    assert names(fields={"metadata.name": "two"}) == {"two"}
    _, _, doc = raw.request("GET", f"/api/v1/configmaps?fieldSelector=metadata.namespace%3D{ns}")
    assert {i["metadata"]["name"] for i in doc["items"]} == {"one", "two", "three"}
    code, _, doc = raw.request("GET", f"/api/v1/namespaces/{ns}/configmaps?fieldSelector=spec.x%3D1")
    assert code == 400 and doc["reason"] == "BadRequest"


def test_limit_and_continue(client: Client, raw: Raw, ns: str) -> None:
    for i in range(7):
        client.create(cm(f"p{i}", ns))
    seen, token, pages = [], "", 0
    while True:
        path = f"/api/v1/namespaces/{ns}/configmaps?limit=3" + (f"&continue={token}" if token else "")
        code, _, doc = raw.request("GET", path)
        assert code == 200 and len(doc["items"]) <= 3
        seen += [i["metadata"]["name"] for i in doc["items"]]
        pages += 1
        token = doc["metadata"].get("continue", "")
        if not token:
            break
    assert sorted(seen) == [f"p{i}" for i in range(7)] and pages == 3
    assert len(list(client.list(ConfigMap, namespace=ns, chunk_size=2))) == 7


def test_put_with_stale_resource_version_conflicts(client: Client, raw: Raw, ns: str) -> None:
    first = client.create(cm("c", ns))
    first.data = {"k": "2"}
    second = client.replace(first)
    assert int(second.metadata.resourceVersion) > int(first.metadata.resourceVersion)
    first.data = {"k": "3"}  # still carries the old resourceVersion
    code, _, doc = raw.request("PUT", f"/api/v1/namespaces/{ns}/configmaps/c", first.to_dict())
    assert code == 409 and doc["reason"] == "Conflict"
    assert client.get(ConfigMap, "c", namespace=ns).data == {"k": "2"}


def test_merge_json_and_strategic_patches(client: Client, ns: str) -> None:
    client.create(cm("m", ns, a="1", b="2"))
    out = client.patch(
        ConfigMap, "m", {"data": {"a": None, "c": "3"}}, namespace=ns, patch_type=PatchType.MERGE
    )
    assert out.data == {"b": "2", "c": "3"}
    out = client.patch(
        ConfigMap,
        "m",
        [{"op": "replace", "path": "/data/b", "value": "x"}],
        namespace=ns,
        patch_type=PatchType.JSON,
    )
    assert out.data == {"b": "x", "c": "3"}
    with pytest.raises(ApiError) as err:
        client.patch(
            ConfigMap,
            "m",
            [{"op": "test", "path": "/data/b", "value": "no"}],
            namespace=ns,
            patch_type=PatchType.JSON,
        )
    assert err.value.status.code == 422
    client.create(deployment("web", ns))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox:2"}]}}}}
    out = client.patch(Deployment, "web", patch, namespace=ns, patch_type=PatchType.STRATEGIC)
    assert [c.name for c in out.spec.template.spec.containers] == ["main", "side"]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:3"}]}}}}
    out = client.patch(Deployment, "web", patch, namespace=ns, patch_type=PatchType.STRATEGIC)
    assert {c.name: c.image for c in out.spec.template.spec.containers} == {
        "main": "busybox:3",
        "side": "busybox:2",
    }


def test_server_side_apply_create_update_conflict_force(client: Client, ns: str) -> None:
    a = client.apply(cm("s", ns, k="1"), field_manager="alpha")
    assert a.data == {"k": "1"}
    assert [(m.manager, m.operation) for m in a.metadata.managedFields] == [("alpha", "Apply")]
    assert a.metadata.managedFields[0].fieldsV1 == {"f:data": {"f:k": {}}}
    b = client.apply(cm("s", ns, k="1", j="2"), field_manager="alpha")
    assert b.data == {"k": "1", "j": "2"}
    shared = client.apply(cm("s", ns, k="1"), field_manager="beta")  # same value: shared, no conflict
    assert {m.manager for m in shared.metadata.managedFields} == {"alpha", "beta"}
    with pytest.raises(ApiError) as err:
        client.apply(cm("s", ns, k="changed"), field_manager="beta")
    status = err.value.status
    assert status.code == 409 and status.reason == "Conflict"
    assert 'conflict with "alpha"' in status.message and ".data.k" in status.message
    forced = client.apply(cm("s", ns, k="changed"), field_manager="beta", force=True)
    assert forced.data["k"] == "changed"
    owners = {m.manager: m.fieldsV1 for m in forced.metadata.managedFields}
    assert "f:k" in owners["beta"]["f:data"] and "f:k" not in owners["alpha"]["f:data"]
    # alpha stops applying j: it is removed, as nobody else owns it
    after = client.apply(cm("s", ns, k="changed"), field_manager="alpha", force=True)
    assert "j" not in after.data


def test_status_subresource_separation_and_generation(client: Client, raw: Raw, ns: str) -> None:
    d = client.create(deployment("gen", ns))
    assert d.metadata.generation == 1
    base = f"/apis/apps/v1/namespaces/{ns}/deployments/gen"
    _, _, doc = raw.request("PATCH", base, {"status": {"replicas": 5}}, "application/merge-patch+json")
    assert "status" not in doc or doc["status"].get("replicas") != 5, (
        "status written through the main resource"
    )
    assert doc["metadata"]["generation"] == 1
    code, _, doc = raw.request(
        "PATCH",
        base + "/status",
        {"status": {"replicas": 5}, "spec": {"replicas": 9}},
        "application/merge-patch+json",
    )
    assert code == 200 and doc["status"]["replicas"] == 5 and doc["spec"]["replicas"] == 1
    assert doc["metadata"]["generation"] == 1
    _, _, doc = raw.request("PATCH", base, {"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert (
        doc["spec"]["replicas"] == 3 and doc["metadata"]["generation"] == 2 and doc["status"]["replicas"] == 5
    )
    _, _, doc = raw.request(
        "PATCH", base, {"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json"
    )
    assert doc["metadata"]["generation"] == 2


def test_delete_with_finalizers(client: Client, raw: Raw, ns: str) -> None:
    client.create(ConfigMap(metadata=ObjectMeta(name="f", namespace=ns, finalizers=["example.com/hold"])))
    client.delete(ConfigMap, "f", namespace=ns)
    held = client.get(ConfigMap, "f", namespace=ns)
    assert held.metadata.deletionTimestamp is not None and held.metadata.finalizers == ["example.com/hold"]
    client.patch(ConfigMap, "f", {"metadata": {"finalizers": None}}, namespace=ns, patch_type=PatchType.MERGE)
    with pytest.raises(ApiError) as err:
        client.get(ConfigMap, "f", namespace=ns)
    assert err.value.status.code == 404
    code, _, doc = raw.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/f")
    assert code == 404 and doc["reason"] == "NotFound"


def test_namespace_deletion_removes_its_objects(client: Client, ns: str) -> None:
    client.create(cm("gone", ns))
    client.create(Secret(metadata=ObjectMeta(name="gone", namespace=ns), stringData={"a": "b"}))
    client.create(deployment("gone", ns))
    client.delete(Namespace, ns)
    assert client.get(Namespace, ns).status.phase == "Terminating"
    with pytest.raises(ApiError) as err:
        client.create(cm("late", ns))
    assert err.value.status.code == 403
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.get(Namespace, ns)
        except ApiError as exc:
            assert exc.status.code == 404
            break
        time.sleep(0.1)
    else:
        pytest.fail("namespace was not removed")
    assert list(client.list(ConfigMap, namespace=ns)) == []
    assert list(client.list(Deployment, namespace=ns)) == []


def test_request_counter(raw: Raw, ns: str) -> None:
    raw.request("DELETE", "/stand-in/requests")
    raw.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    raw.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    raw.request("GET", f"/api/v1/namespaces/{ns}/configmaps/none")
    raw.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/x?fieldManager=t",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
        "application/apply-patch+yaml",
    )
    _, _, counts = raw.request("GET", "/stand-in/requests")
    assert counts["list /v1/configmaps"] == 2
    assert counts["get /v1/configmaps"] == 1
    assert counts["apply /v1/configmaps"] == 1
    raw.request("DELETE", "/stand-in/requests")
    _, _, counts = raw.request("GET", "/stand-in/requests")
    assert counts == {}


def test_system_namespaces_exist(raw: Raw) -> None:
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        code, _, doc = raw.request("GET", f"/api/v1/namespaces/{name}")
        assert code == 200 and doc["status"]["phase"] == "Active", name
