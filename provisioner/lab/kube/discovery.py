"""Discovery documents in the classic (non-aggregated) format, plus minimal OpenAPI documents.

kubectl 1.32 asks for aggregated discovery first (``Accept: ...as=APIGroupDiscoveryList``) and falls
back to the classic format when the answer is plain ``application/json``, which is all the stand-in
serves.

OpenAPI: the stand-in has no schemas. ``/openapi/v3`` lists every served group-version, and each
``/openapi/v3/<api|apis/g>/<v>`` document holds one PATCH operation per kind, carrying
``x-kubernetes-group-version-kind`` and the ``fieldValidation`` query parameter and nothing else:
exactly what kubectl's query-parameter verifier looks for to decide that the server validates fields
itself, so kubectl skips client-side validation (which would need the protobuf OpenAPI v2 document).
``/openapi/v2`` answers a valid, empty Swagger document in JSON. ``kubectl explain`` does not work.
"""

from __future__ import annotations

import platform
from typing import Any

from .resources import Catalog, ResourceType

SUFFIX = "+provisioner-stand-in"


def version_doc(kubernetes_version: str) -> dict[str, Any]:
    v = kubernetes_version.lstrip("v")
    major, minor = [*v.split("."), "0"][:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{v}{SUFFIX}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "stand-in",
        "platform": "linux/amd64",
    }


def _resources(types: list[ResourceType]) -> list[dict[str, Any]]:
    out = []
    for r in sorted(types, key=lambda r: r.plural):
        out.append(r.discovery())
        if r.status:
            out.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return out


def core_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def group_list(catalog: Catalog) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in catalog.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(catalog: Catalog, name: str) -> dict[str, Any] | None:
    versions = catalog.groups().get(name)
    if not name or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(catalog: Catalog, group: str, version: str) -> dict[str, Any] | None:
    types = catalog.in_group_version(group, version)
    if not types:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": _resources(types),
    }


def openapi_v2(kubernetes_version: str) -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes API server stand-in", "version": kubernetes_version + SUFFIX},
        "paths": {},
        "definitions": {},
    }


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_root(catalog: Catalog) -> dict[str, Any]:
    paths = {}
    for group, versions in catalog.groups().items():
        for v in versions:
            p = _gv_path(group, v)
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash=stand-in"}
    return {"paths": paths}


def openapi_v3_gv(
    catalog: Catalog, group: str, version: str, kubernetes_version: str
) -> dict[str, Any] | None:
    types = catalog.in_group_version(group, version)
    if not types:
        return None
    paths: dict[str, Any] = {}
    for r in types:
        ns = "namespaces/{namespace}/" if r.namespaced else ""
        url = f"/{_gv_path(group, version)}/{ns}{r.plural}/{{name}}"
        paths[url] = {
            "patch": {
                "operationId": f"patch{r.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
                "parameters": [
                    {
                        "name": "fieldValidation",
                        "in": "query",
                        "schema": {"type": "string", "uniqueItems": True},
                    },
                    {
                        "name": "fieldManager",
                        "in": "query",
                        "schema": {"type": "string", "uniqueItems": True},
                    },
                    {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": True}},
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes API server stand-in", "version": kubernetes_version + SUFFIX},
        "paths": paths,
        "components": {"schemas": {}},
    }
