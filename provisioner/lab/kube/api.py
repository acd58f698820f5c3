"""The API server stand-in's request handling: routing, verbs, watches, faults and the request counter.

``KubeAPI.handle`` is the HTTP handler (see ``httpd.py`` for the transport). Resource URLs follow the
real layout (``/api/v1/namespaces/<ns>/<resource>/<name>[/status]``, ``/apis/<group>/<version>/...``);
storage semantics live in ``store.py``, SSA in ``managed.py``, patches in ``patch.py``. Every error
is a ``Status`` object. ``/stand-in/requests`` (GET: counts, DELETE: reset) and
``/stand-in/compact`` (POST: compact etcd to now, to exercise 410 Gone) are the stand-in's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import yaml

from . import discovery, managed
from .etcdgw import EtcdCompacted, EtcdGateway, EtcdGatewayError
from .faults import KubeFaults
from .httpd import Request, ResetConnection, Response, Stream
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import (
    APISERVICE_TYPE,
    CRD_TYPE,
    NAMESPACE_TYPE,
    TENANT_APISERVICE,
    TENANT_NAME_PATTERN,
    TENANT_TYPE,
    Catalog,
    ResourceType,
)
from .selectors import SelectorError, combine, parse_fields, parse_labels
from .status import ApiError, conflict, invalid, not_found
from .store import Store, dumps, finalize_write

log = logging.getLogger("kube-stand-in")

JSON = "application/json"
APPLY = ("application/apply-patch+yaml", "application/apply-patch+json")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(status: int, doc: Any) -> Response:
    return Response(status, dumps(doc))


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        secs = int(
            time.time() - dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
        )
    except ValueError:
        return "<unknown>"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size * 2:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def _node_cells(o: dict[str, Any]) -> list[str]:
    conds = (o.get("status") or {}).get("conditions") or []
    ready = next((c.get("status") for c in conds if c.get("type") == "Ready"), "Unknown")
    labels = (o.get("metadata") or {}).get("labels") or {}
    roles = ",".join(sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")))
    version = ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return ["Ready" if ready == "True" else "NotReady", roles or "<none>", version]


def _table(objs: list[dict[str, Any]], rv: str, cont: str | None = None) -> dict[str, Any]:
    """The ``meta.k8s.io/v1`` Table kubectl asks for when it prints (Name and Age; Nodes also show
    Status, Roles and Version, as with the real server)."""
    nodes = bool(objs) and objs[0].get("kind") == "Node"
    rows = []
    for o in objs:
        meta = o.get("metadata") or {}
        cells = [meta.get("name", ""), _age(meta.get("creationTimestamp"))]
        if nodes:
            status, roles, version = _node_cells(o)
            cells = [cells[0], status, roles, cells[1], version]
        rows.append(
            {
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
            }
        )
    names = ["Name", "Status", "Roles", "Age", "Version"] if nodes else ["Name", "Age"]
    doc: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [
            {
                "name": n,
                "type": "string",
                "format": "name" if n == "Name" else "",
                "description": n,
                "priority": 0,
            }
            for n in names
        ],
        "rows": rows,
    }
    if cont:
        doc["metadata"]["continue"] = cont
    return doc


class _NeedNamespaceCheck(Exception):
    """Apply is about to create an object: its namespace must be checked first (async)."""


class KubeAPI:
    """The stand-in's handler. One per server process; state lives in etcd."""

    def __init__(
        self,
        gw: EtcdGateway,
        kubernetes_version: str = "v1.34.1",
        faults: KubeFaults | None = None,
        bookmark_interval: float = 5.0,
        tokens: frozenset[str] = frozenset(),
    ) -> None:
        self.gw = gw
        self.tokens = tokens
        self.store = Store(gw)
        self.catalog = Catalog()
        self.version = kubernetes_version
        self.faults = faults or KubeFaults()
        self.rng = self.faults.rng("kube-api")
        self.bookmark_interval = bookmark_interval
        self.counts: Counter[str] = Counter()
        self._catalog_at = 0.0
        self._ns_kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh_catalog(force=True)
        await self._system_namespaces()
        self._tasks.append(asyncio.create_task(self._namespace_controller()))

    async def _system_namespaces(self) -> None:
        """The namespaces every cluster has (the real API server creates them at start)."""
        for name in SYSTEM_NAMESPACES:
            if await self.store.namespace_state(name) is None:
                obj: dict[str, Any] = {"metadata": {"name": name}}
                self._prepare_new(NAMESPACE_TYPE, obj)
                managed.record_update(None, obj, "kube-apiserver", "v1")
                with contextlib.suppress(ApiError):  # another control plane was quicker
                    await self.store.create(NAMESPACE_TYPE, None, obj)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def refresh_catalog(self, force: bool = False) -> None:
        """Re-read CRDs and the Tenant APIService from etcd (at most once a second unless forced)."""
        if not force and time.monotonic() - self._catalog_at < 1.0:
            return
        kvs, _, _ = await self.gw.range_prefix(CRD_TYPE.prefix())
        crds = [json.loads(kv.value) for kv in kvs]
        tenants = await self.store.exists(APISERVICE_TYPE, None, TENANT_APISERVICE)
        self.catalog.set_dynamic(crds, tenants)
        self._catalog_at = time.monotonic()

    # --- entry point -------------------------------------------------------------------------------

    def _authenticated(self, req: Request) -> bool:
        if req.client_cert or not self.tokens:
            return True  # without tokens, TLS itself required a verified certificate
        auth = req.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:].strip() in self.tokens

    async def handle(self, req: Request, stream: Stream) -> Response | None:
        try:
            if not self._authenticated(req):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            return await self._route(req, stream)
        except ApiError as exc:
            return _json(exc.code, exc.body())
        except ResetConnection:
            raise
        except EtcdGatewayError as exc:
            log.warning("kube stand-in: etcd error on %s %s: %s", req.method, req.path, exc)
            return _json(500, ApiError(500, f"etcd: {exc}").body())
        except Exception as exc:
            log.exception("kube stand-in: %s %s failed", req.method, req.path)
            return _json(500, ApiError(500, f"internal error: {exc!r}").body())

    async def _route(self, req: Request, stream: Stream) -> Response | None:
        path = req.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return _json(200, discovery.version_doc(self.version))
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", "text/plain")
        if path == "/stand-in/requests":
            if req.method == "DELETE":
                self.counts.clear()
            return _json(200, dict(sorted(self.counts.items())))
        if path == "/stand-in/compact" and req.method == "POST":
            rev = await self.gw.current_revision()
            await self.gw.compact(rev)
            return _json(200, {"compacted": rev})
        if path == "/openapi/v2":
            return _json(200, discovery.openapi_v2(self.version))
        if path == "/openapi/v3":
            await self.refresh_catalog()
            return _json(200, discovery.openapi_v3_root(self.catalog))
        if path.startswith("/openapi/v3/"):
            await self.refresh_catalog()
            gv = parts[2:]  # ["api", "v1"] or ["apis", group, version]
            if gv[:1] == ["api"] and len(gv) == 2:
                doc = discovery.openapi_v3_gv(self.catalog, "", gv[1], self.version)
            elif gv[:1] == ["apis"] and len(gv) == 3:
                doc = discovery.openapi_v3_gv(self.catalog, gv[1], gv[2], self.version)
            else:
                doc = None
            if doc is None:
                raise ApiError(404, "the server could not find the requested resource")
            return _json(200, doc)
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                return _json(200, discovery.core_versions())
            return await self._api(req, stream, "", parts[1], parts[2:])
        if parts[:1] == ["apis"]:
            await self.refresh_catalog()
            if len(parts) == 1:
                return _json(200, discovery.group_list(self.catalog))
            if len(parts) == 2:
                doc = discovery.group(self.catalog, parts[1])
                if doc is None:
                    raise ApiError(404, "the server could not find the requested resource")
                return _json(200, doc)
            return await self._api(req, stream, parts[1], parts[2], parts[3:])
        raise ApiError(404, "the server could not find the requested resource")

    async def _api(
        self, req: Request, stream: Stream, group: str, version: str, rest: list[str]
    ) -> Response | None:
        if not rest:
            await self.refresh_catalog()
            doc = discovery.resource_list(self.catalog, group, version)
            if doc is None:
                raise ApiError(404, "the server could not find the requested resource")
            return _json(200, doc)
        ns: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (group == "" and rest[2] in ("status", "finalize"))
        ):
            ns, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or sub not in ("", "status", "finalize"):
            raise ApiError(404, "the server could not find the requested resource")
        rtype = self.catalog.lookup(group, version, plural)
        if rtype is None:
            await self.refresh_catalog(force=True)
            rtype = self.catalog.lookup(group, version, plural)
            if rtype is None:
                raise ApiError(404, "the server could not find the requested resource")
        if sub == "status" and not rtype.status:
            raise ApiError(404, "the server could not find the requested resource")
        if not rtype.namespaced:
            ns = None
        verb = self._verb(req, name)
        self.counts[f"{verb} {group}/{version}/{plural}{'/' + sub if sub else ''}"] += 1
        if self.faults.any_server_faults:
            self._inject(verb)
        if verb == "get":
            assert name is not None
            obj = await self.store.get(rtype, ns, name)
            if "as=Table" in req.headers.get("accept", ""):
                return _json(200, _table([obj], obj["metadata"]["resourceVersion"]))
            return _json(200, obj)
        if verb in ("list", "watch"):
            return await self._list(req, stream, rtype, ns, verb == "watch")
        if verb == "create":
            return await self._create(req, rtype, ns)
        assert name is not None or verb == "delete"
        if verb == "update":
            return await self._update(req, rtype, ns, name or "", sub)
        if verb in ("patch", "apply"):
            return await self._patch(req, rtype, ns, name or "", sub, verb == "apply")
        if verb == "delete":
            if name is None:
                return await self._delete_collection(req, rtype, ns)
            return await self._delete(req, rtype, ns, name)
        raise ApiError(405, f"method {req.method} is not allowed here")

    @staticmethod
    def _verb(req: Request, name: str | None) -> str:
        m = req.method
        if m == "GET":
            if name:
                return "get"
            return "watch" if req.query.get("watch") in ("1", "true") else "list"
        if m == "POST" and not name:
            return "create"
        if m == "PUT" and name:
            return "update"
        if m == "PATCH" and name:
            ctype = req.headers.get("content-type", "").split(";")[0].strip()
            return "apply" if ctype in APPLY else "patch"
        if m == "DELETE":
            return "delete"
        raise ApiError(405, f"method {m} is not allowed here", "MethodNotAllowed")

    def _inject(self, verb: str) -> None:
        roll = self.rng.random()
        if roll < self.faults.reset:
            log.info("kube stand-in: fault injection: connection reset (%s)", verb)
            raise ResetConnection()
        if roll < self.faults.reset + self.faults.api500:
            log.info("kube stand-in: fault injection: 500 (%s)", verb)
            raise ApiError(500, "stand-in fault injection: internal error", "InternalError")

    # --- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _body(req: Request, yaml_ok: bool = False) -> dict[str, Any]:
        ctype = req.headers.get("content-type", "")
        if "protobuf" in ctype or "cbor" in ctype:
            raise ApiError(
                415,
                f"the stand-in accepts JSON bodies only, not {ctype.split(';')[0]}",
                "UnsupportedMediaType",
            )
        try:
            if yaml_ok and not req.body.lstrip().startswith(b"{"):
                doc = yaml.load(req.body, Loader=_YAML_LOADER)
            else:
                doc = json.loads(req.body or b"null")  # JSON is YAML too; clients send it
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(
                400, f"the request body is not valid {'YAML' if yaml_ok else 'JSON'}: {exc}"
            ) from None
        if not isinstance(doc, dict):
            raise ApiError(400, "the request body must be an object")
        return doc

    @staticmethod
    def _manager(req: Request) -> str:
        if req.query.get("fieldManager"):
            return req.query["fieldManager"]
        agent = req.headers.get("user-agent", "")
        return agent.split("/")[0] or "unknown"

    def _check_identity(
        self, rtype: ResourceType, ns: str | None, name: str | None, obj: dict[str, Any]
    ) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != rtype.kind:
            raise ApiError(400, f"the object's kind {kind!r} does not match the resource ({rtype.kind})")
        if api_version and api_version != rtype.api_version:
            raise ApiError(
                400, f"the object's apiVersion {api_version!r} does not match the URL ({rtype.api_version})"
            )
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced and meta.get("namespace") and ns and meta["namespace"] != ns:
            raise ApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if name is not None and meta.get("name") and meta["name"] != name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        if name is not None:
            meta["name"] = name

    def _validate_name(self, rtype: ResourceType, name: str) -> None:
        if rtype is TENANT_TYPE and not re.match(TENANT_NAME_PATTERN, name):
            raise invalid(
                rtype.kind,
                rtype.group,
                name,
                [
                    (
                        "metadata.name",
                        "FieldValueInvalid",
                        f'Invalid value: "{name}": must match the regex {TENANT_NAME_PATTERN} '
                        "(lowercase letters and digits, no dashes)",
                    )
                ],
            )
        pattern = DNS_LABEL if rtype is NAMESPACE_TYPE else DNS_SUBDOMAIN
        if not pattern.match(name):
            raise invalid(
                rtype.kind,
                rtype.group,
                name,
                [
                    (
                        "metadata.name",
                        "FieldValueInvalid",
                        f'Invalid value: "{name}": a lowercase RFC 1123 '
                        f"{'label' if rtype is NAMESPACE_TYPE else 'subdomain'} is required",
                    )
                ],
            )

    async def _check_namespace(self, rtype: ResourceType, ns: str | None) -> None:
        if not rtype.namespaced:
            return
        if not ns:
            raise ApiError(400, "a namespaced resource needs a namespace in the URL")
        state = await self.store.namespace_state(ns)
        if state is None:
            raise not_found("namespaces", ns, "namespaces")
        if state == "Terminating":
            raise ApiError(
                403,
                f"unable to create new content in namespace {ns} because it is being terminated",
                "Forbidden",
                {"name": ns, "kind": "namespaces"},
            )

    def _prepare_new(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """Server-set fields of a new object."""
        meta = obj["metadata"]
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if rtype is NAMESPACE_TYPE:
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
        elif rtype is CRD_TYPE:
            names = (obj.get("spec") or {}).get("names") or {}
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": [
                    v.get("name") for v in (obj.get("spec") or {}).get("versions") or [] if v.get("storage")
                ],
                "conditions": [
                    {
                        "type": t,
                        "status": "True",
                        "reason": r,
                        "message": m,
                        "lastTransitionTime": _now(),
                    }
                    for t, r, m in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                    )
                ],
            }
        elif rtype.status and rtype is not APISERVICE_TYPE:
            obj.pop("status", None)

    async def _after_write(self, rtype: ResourceType) -> None:
        if rtype is CRD_TYPE or rtype is APISERVICE_TYPE:
            await self.refresh_catalog(force=True)

    @staticmethod
    def _dry_run(req: Request) -> bool:
        return bool(req.query.get("dryRun"))

    # --- verbs -------------------------------------------------------------------------------------

    async def _create(self, req: Request, rtype: ResourceType, ns: str | None) -> Response:
        obj = self._body(req)
        self._check_identity(rtype, ns, None, obj)
        meta = obj["metadata"]
        if meta.get("name"):
            self._validate_name(rtype, meta["name"])
        elif not meta.get("generateName"):
            raise invalid(
                rtype.kind, rtype.group, "", [("metadata.name", "FieldValueRequired", "Required value")]
            )
        await self._check_namespace(rtype, ns)
        self._prepare_new(rtype, obj)
        managed.record_update(None, obj, self._manager(req), rtype.api_version)
        if self._dry_run(req):
            obj["metadata"].setdefault("name", meta.get("generateName", "") + "dryrun")
            return _json(201, obj)
        created = await self.store.create(rtype, ns, obj)
        await self._after_write(rtype)
        return _json(201, created)

    async def _update(
        self, req: Request, rtype: ResourceType, ns: str | None, name: str, sub: str
    ) -> Response:
        obj = self._body(req)
        self._check_identity(rtype, ns, name, obj)
        want_rv = obj["metadata"].get("resourceVersion")
        manager = self._manager(req)

        def mutate(cur: dict[str, Any] | None) -> dict[str, Any] | None:
            if cur is None:
                raise not_found(rtype.group_resource, name, rtype.plural)
            if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
                raise conflict(rtype.group_resource, name, rtype.plural)
            new = copy.deepcopy(obj)
            new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
            if sub == "finalize":
                merged = copy.deepcopy(cur)
                merged.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get("finalizers") or []
                return merged
            return finalize_write(rtype, cur, new, manager, sub)

        result = await self.store.write(rtype, ns, name, mutate)
        await self._after_write(rtype)
        return _json(200, result)

    async def _patch(
        self, req: Request, rtype: ResourceType, ns: str | None, name: str, sub: str, apply: bool
    ) -> Response:
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        manager = self._manager(req)
        created = False
        if apply:
            if not req.query.get("fieldManager"):
                raise ApiError(
                    400, "PATCH with application/apply-patch+yaml requires the fieldManager parameter"
                )
            applied = self._body(req, yaml_ok=True)
            self._check_identity(rtype, ns, name, applied)
            if not applied.get("apiVersion") or not applied.get("kind"):
                raise ApiError(400, "an applied configuration needs apiVersion and kind")
            self._validate_name(rtype, name)
            force = req.query.get("force") in ("true", "1")
            namespace_checked = False

            def mutate(cur: dict[str, Any] | None) -> dict[str, Any] | None:
                nonlocal created
                created = cur is None
                if cur is None and not namespace_checked:
                    raise _NeedNamespaceCheck()
                skip_status = sub != "status" and rtype.status
                try:
                    new = managed.apply(cur, applied, manager, force, rtype.api_version, skip_status, sub)
                except managed.ApplyConflict as exc:
                    raise self._apply_conflict(rtype, name, exc) from None
                if cur is None:
                    self._prepare_new(rtype, new)
                    return new
                return finalize_write(rtype, cur, new, manager, sub, record=False)

        else:
            try:
                patch_doc = json.loads(req.body or b"null")
            except ValueError as exc:
                raise ApiError(400, f"the patch is not valid JSON: {exc}") from None
            fn: Callable[[Any, Any], Any]
            if ctype == "application/json-patch+json":
                fn = json_patch
            elif ctype == "application/merge-patch+json":
                fn = merge_patch
            elif ctype == "application/strategic-merge-patch+json":
                fn = strategic_merge_patch
            else:
                raise ApiError(415, f"unsupported patch content type {ctype!r}", "UnsupportedMediaType")
            want_rv = ((patch_doc.get("metadata") or {}) if isinstance(patch_doc, dict) else {}).get(
                "resourceVersion"
            )

            def mutate(cur: dict[str, Any] | None) -> dict[str, Any] | None:
                if cur is None:
                    raise not_found(rtype.group_resource, name, rtype.plural)
                if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
                    raise conflict(rtype.group_resource, name, rtype.plural)
                try:
                    new = fn(cur, patch_doc)
                except PatchError as exc:
                    raise invalid(
                        rtype.kind, rtype.group, name, [("", "FieldValueInvalid", str(exc))]
                    ) from None
                if not isinstance(new, dict):
                    raise ApiError(422, "the patch did not produce an object", "Invalid")
                if (new.get("metadata") or {}).get("name", name) != name:
                    raise ApiError(400, "the patch may not change the object's name")
                new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
                return finalize_write(rtype, cur, new, manager, sub)

        if self._dry_run(req):
            cur = None
            with contextlib.suppress(ApiError):
                cur = await self.store.get(rtype, ns, name)
            if cur is None and apply:
                await self._check_namespace(rtype, ns)
                namespace_checked = True
            return _json(200, mutate(cur))
        try:
            result = await self.store.write(rtype, ns, name, mutate)
        except _NeedNamespaceCheck:
            await self._check_namespace(rtype, ns)
            namespace_checked = True
            result = await self.store.write(rtype, ns, name, mutate)
        await self._after_write(rtype)
        return _json(201 if created else 200, result)

    @staticmethod
    def _apply_conflict(rtype: ResourceType, name: str, exc: managed.ApplyConflict) -> ApiError:
        causes = [
            {"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": "." + ".".join(p)}
            for m, p in exc.conflicts
        ]
        if len(exc.conflicts) == 1:
            m, p = exc.conflicts[0]
            text = f'conflict with "{m}": .{".".join(p)}'
        else:
            text = "\n".join(f'- conflict with "{m}": .{".".join(p)}' for m, p in exc.conflicts)
        return ApiError(
            409,
            f"Apply failed with {len(exc.conflicts)} conflict{'s' if len(exc.conflicts) > 1 else ''}: {text}",
            "Conflict",
            {"name": name, "group": rtype.group, "kind": rtype.plural, "causes": causes},
        )

    async def _delete(self, req: Request, rtype: ResourceType, ns: str | None, name: str) -> Response:
        opts: dict[str, Any] = {}
        if req.body.strip():
            opts = self._body(req)
        want_uid = (opts.get("preconditions") or {}).get("uid")
        want_rv = (opts.get("preconditions") or {}).get("resourceVersion")

        def mutate(cur: dict[str, Any] | None) -> dict[str, Any] | None:
            if cur is None:
                raise not_found(rtype.group_resource, name, rtype.plural)
            meta = cur["metadata"]
            if (want_uid and want_uid != meta.get("uid")) or (want_rv and want_rv != meta["resourceVersion"]):
                raise conflict(rtype.group_resource, name, rtype.plural)
            pending = meta.get("finalizers") or (
                rtype is NAMESPACE_TYPE and (cur.get("spec") or {}).get("finalizers")
            )
            if not pending:
                return None
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = _now()
                meta["deletionGracePeriodSeconds"] = 0
            if rtype is NAMESPACE_TYPE:
                cur.setdefault("status", {})["phase"] = "Terminating"
            return cur

        if self._dry_run(req):
            return _json(200, await self.store.get(rtype, ns, name))
        result = await self.store.write(rtype, ns, name, mutate)
        if rtype is NAMESPACE_TYPE:
            self._ns_kick.set()
        if rtype is CRD_TYPE and not result["metadata"].get("finalizers"):
            await self._purge_crd(result)
        await self._after_write(rtype)
        return _json(200, result)

    async def _delete_collection(self, req: Request, rtype: ResourceType, ns: str | None) -> Response:
        try:
            match = combine(
                parse_labels(req.query.get("labelSelector")), parse_fields(req.query.get("fieldSelector"))
            )
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from None
        items, rev, _ = await self.store.list(rtype, ns, match)
        deleted = []
        for obj in items:
            meta = obj["metadata"]
            sub_req = Request("DELETE", "", {}, {}, b"")
            with contextlib.suppress(ApiError):
                resp = await self._delete(sub_req, rtype, meta.get("namespace"), meta["name"])
                deleted.append(json.loads(resp.body))
        return _json(
            200,
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(rev)},
                "items": deleted,
            },
        )

    async def _purge_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        plural, group = (spec.get("names") or {}).get("plural"), spec.get("group")
        if not plural or not group:
            return
        prefix = f"/registry/{group}/{plural}/"
        kvs, _, _ = await self.gw.range_prefix(prefix)
        for kv in kvs:
            await self.gw.delete(kv.key, kv.mod_revision)

    # --- list and watch ----------------------------------------------------------------------------

    async def _list(
        self, req: Request, stream: Stream, rtype: ResourceType, ns: str | None, watch: bool
    ) -> Response | None:
        try:
            match = combine(
                parse_labels(req.query.get("labelSelector")), parse_fields(req.query.get("fieldSelector"))
            )
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from None
        if watch:
            await self._watch(req, stream, rtype, ns, match)
            return None
        try:
            limit = int(req.query.get("limit") or 0)
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        items, rev, cont = await self.store.list(rtype, ns, match, limit, req.query.get("continue") or None)
        if "as=Table" in req.headers.get("accept", ""):
            return _json(200, _table(items, str(rev), cont))
        meta: dict[str, Any] = {"resourceVersion": str(rev)}
        if cont:
            meta["continue"] = cont
        return _json(
            200,
            {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta, "items": items},
        )

    async def _watch(
        self, req: Request, stream: Stream, rtype: ResourceType, ns: str | None, match: Any
    ) -> None:
        q = req.query
        try:
            timeout = float(q.get("timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError(400, "timeoutSeconds must be a number") from None
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        table = "as=Table" in req.headers.get("accept", "")
        stalled = self.faults.stall_watch > 0 and self.rng.random() < self.faults.stall_watch
        rv = q.get("resourceVersion") or "0"
        prefix = rtype.prefix(ns if rtype.namespaced else None)
        initial: list[dict[str, Any]] = []
        if rv == "0":
            initial, start, _ = await self.store.list(rtype, ns, match)
        else:
            try:
                start = int(rv)
            except ValueError:
                raise ApiError(400, f"invalid resourceVersion {rv!r}") from None
        deadline = time.monotonic() + timeout
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for item in self.gw.watch(prefix, start + 1):
                    await queue.put(item)
                await queue.put(None)
            except EtcdCompacted:
                await queue.put("expired")
            except EtcdGatewayError as exc:
                await queue.put(exc)

        def wrap(obj: dict[str, Any]) -> dict[str, Any]:
            return _table([obj], obj["metadata"]["resourceVersion"]) if table else obj

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await stream.send(dumps({"type": kind, "object": wrap(obj) if kind != "ERROR" else obj}) + b"\n")

        pumper = asyncio.create_task(pump())
        closed = asyncio.create_task(stream.closed())
        last_rv = start
        try:
            await stream.start(200, JSON)
            if stalled:
                log.info("kube stand-in: fault injection: watch on %s stalls", rtype.plural)
            for obj in initial:
                await send("ADDED", obj)
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline or closed.done():
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=max(wait, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if bookmarks and time.monotonic() >= next_bookmark and not stalled:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": rtype.kind,
                                "apiVersion": rtype.api_version,
                                "metadata": {"resourceVersion": str(last_rv)},
                            },
                        )
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                item = getter.result()
                if item is None:
                    break
                if item == "expired":
                    await send("ERROR", ApiError(410, f"too old resource version: {start}", "Expired").body())
                    break
                if isinstance(item, Exception):
                    await send("ERROR", ApiError(500, f"etcd watch failed: {item}").body())
                    break
                if isinstance(item, int):
                    last_rv = max(last_rv, item)
                    continue
                for ev in item:
                    last_rv = ev.kv.mod_revision
                    if stalled:
                        continue
                    if not rtype.namespaced and ev.kv.key.count("/") != prefix.count("/"):
                        continue
                    await self._send_event(send, rtype, ev, match)
        except (ConnectionError, OSError):
            pass
        finally:
            pumper.cancel()
            closed.cancel()
        with contextlib.suppress(ConnectionError, OSError):
            await stream.finish()

    async def _send_event(self, send: Any, rtype: ResourceType, ev: Any, match: Any) -> None:
        if ev.type == "DELETE":
            if ev.prev is None:
                return
            obj = self.store.decode(rtype, ev.prev)
            obj["metadata"]["resourceVersion"] = str(ev.kv.mod_revision)
            if match is None or match(obj):
                await send("DELETED", obj)
            return
        obj = self.store.decode(rtype, ev.kv)
        new_ok = match is None or match(obj)
        if ev.prev is None or ev.kv.version == 1:
            if new_ok:
                await send("ADDED", obj)
            return
        old_ok = match is None or match(self.store.decode(rtype, ev.prev))
        if new_ok and old_ok:
            await send("MODIFIED", obj)
        elif new_ok:
            await send("ADDED", obj)
        elif old_ok:
            await send("DELETED", obj)

    # --- namespace controller ----------------------------------------------------------------------

    async def _namespace_controller(self) -> None:
        """Empties terminating namespaces and removes them once empty (every server runs it; every
        step is a compare-and-swap, so concurrent servers do not fight)."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ns_kick.wait(), 1.0)
            self._ns_kick.clear()
            try:
                kvs, _, _ = await self.gw.range_prefix(NAMESPACE_TYPE.prefix())
                for kv in kvs:
                    ns = self.store.decode(NAMESPACE_TYPE, kv)
                    if ns["metadata"].get("deletionTimestamp"):
                        if await self._empty_namespace(ns["metadata"]["name"]):
                            await self.gw.delete(kv.key, kv.mod_revision)
                            log.info("kube stand-in: namespace %s removed", ns["metadata"]["name"])
                        else:
                            self._ns_kick.set()
                            await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("kube stand-in: namespace controller: %s", exc)

    async def _empty_namespace(self, ns: str) -> bool:
        """One pass of deleting a namespace's objects; True when nothing is left."""
        await self.refresh_catalog()
        prefixes = {r.prefix(ns): r for r in self.catalog.types.values() if r.namespaced}
        left = 0
        for prefix in prefixes:
            kvs, _, _ = await self.gw.range_prefix(prefix)
            for kv in kvs:
                obj = json.loads(kv.value)
                meta = obj.setdefault("metadata", {})
                if meta.get("finalizers"):
                    left += 1
                    if not meta.get("deletionTimestamp"):
                        meta["deletionTimestamp"] = _now()
                        await self.gw.update(kv.key, dumps(obj), kv.mod_revision)
                elif await self.gw.delete(kv.key, kv.mod_revision) is None:
                    left += 1
        return left == 0
