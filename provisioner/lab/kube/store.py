"""Objects in etcd: the storage semantics of the API server stand-in.

Every object is stored as JSON under ``/registry/<group|core>/<resource>/[<namespace>/]<name>``
without its ``resourceVersion``: that is the key's etcd mod revision, filled in on every read, so a
write's compare-and-swap on the mod revision is the optimistic concurrency check (409 Conflict on a
stale ``resourceVersion``). Reads go to etcd every time, so several servers on one etcd (the lab's
control planes) answer the same.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

from . import managed
from .etcdgw import KV, EtcdCompacted, EtcdGateway
from .resources import NAMESPACE_TYPE, ResourceType
from .selectors import Matcher
from .status import ApiError, already_exists, conflict, not_found

Mutator = Callable[[dict[str, Any] | None], dict[str, Any] | None]
MAX_RETRIES = 50
CACHE_SIZE = 20000


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that bumps ``metadata.generation`` when it changes (all but metadata and status)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    """Typed object access on top of an etcd gateway client."""

    def __init__(self, gw: EtcdGateway) -> None:
        self.gw = gw
        self._cache: dict[str, KV] = {}  # key -> last value seen (written or read by write())

    def decode(self, rtype: ResourceType, kv: KV) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(kv.value)
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
        return obj

    @staticmethod
    def encode(obj: dict[str, Any]) -> bytes:
        stored = dict(obj)
        meta = dict(stored.get("metadata") or {})
        meta.pop("resourceVersion", None)
        stored["metadata"] = meta
        return dumps(stored)

    async def get(self, rtype: ResourceType, ns: str | None, name: str) -> dict[str, Any]:
        kv, _ = await self.gw.get(rtype.key(ns, name))
        if kv is None:
            raise not_found(rtype.group_resource, name, rtype.plural)
        return self.decode(rtype, kv)

    async def exists(self, rtype: ResourceType, ns: str | None, name: str) -> bool:
        kv, _ = await self.gw.get(rtype.key(ns, name))
        return kv is not None

    async def list(
        self,
        rtype: ResourceType,
        ns: str | None,
        match: Matcher | None,
        limit: int = 0,
        cont: str | None = None,
    ) -> tuple[list[dict[str, Any]], int, str | None]:
        """(items, revision, continue token). Pages are read at one pinned revision."""
        prefix = rtype.prefix(ns if rtype.namespaced else None)
        start, revision = None, 0
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                start, revision = token["start"], int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, f"continue key is not valid: {cont!r}") from None
            if not str(start).startswith(prefix):
                raise ApiError(400, "continue key does not belong to this list")
        items: list[dict[str, Any]] = []
        while True:
            batch = max(limit - len(items), 0) + 1 if limit else 0
            try:
                kvs, rev, more = await self.gw.range_prefix(prefix, start, batch, revision)
            except EtcdCompacted:
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.",
                    "Expired",
                ) from None
            revision = revision or rev
            for kv in kvs:
                if limit and len(items) == limit:
                    return items, revision, _token(kv.key, revision)
                if not rtype.namespaced and kv.key.count("/") != prefix.count("/"):
                    continue
                obj = self.decode(rtype, kv)
                if match is None or match(obj):
                    items.append(obj)
            if not kvs or not (more or (limit and len(kvs) == batch)):
                return items, revision, None
            start = kvs[-1].key + "\x00"

    async def create(self, rtype: ResourceType, ns: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        given = bool(meta.get("name"))
        if not given and not meta.get("generateName"):
            raise ApiError(400, "name or generateName is required")
        for _ in range(10):
            name = meta["name"] if given else meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
            rev = await self.gw.create(rtype.key(ns, name), self.encode(obj))
            if rev is not None:
                meta["resourceVersion"] = str(rev)
                obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
                return obj
            if given:
                raise already_exists(rtype.group_resource, name, rtype.plural)
        raise ApiError(500, "could not generate a unique name")

    async def write(self, rtype: ResourceType, ns: str | None, name: str, mutate: Mutator) -> dict[str, Any]:
        """Read-modify-write with compare-and-swap, retried on races. ``mutate`` gets the current object
        (None if missing) and returns the new one (None: delete it). Returns the stored result; after a
        deletion, the last state with the deletion's ``resourceVersion``.

        The last value this server saw of each key is kept, so a write usually costs one etcd round
        trip (a transaction that puts if the key is unchanged, else returns its current value). A
        cached value is only a guess: the compare-and-swap decides, and an error ``mutate`` raises on
        a cached value is re-checked against a fresh read before it is returned."""
        key = rtype.key(ns, name)
        kv: KV | None
        fresh = key not in self._cache
        kv = (await self.gw.get(key))[0] if fresh else self._cache[key]
        for _ in range(MAX_RETRIES):
            current = self.decode(rtype, kv) if kv else None
            try:
                new = mutate(self.decode(rtype, kv) if kv else None)
            except ApiError:
                if fresh:
                    raise
                kv, fresh = (await self.gw.get(key))[0], True
                continue
            if new is None:
                if kv is None:
                    raise not_found(rtype.group_resource, name, rtype.plural)
                rev = await self.gw.delete(key, kv.mod_revision)
                if rev is None:
                    kv, fresh = (await self.gw.get(key))[0], True
                    continue
                self._cache.pop(key, None)
                assert current is not None
                current["metadata"]["resourceVersion"] = str(rev)
                return current
            if kv is None and not new["metadata"].get("name"):
                return await self.create(rtype, ns, new)
            if current is not None and new == current:
                if fresh:
                    return current
                kv, fresh = (await self.gw.get(key))[0], True  # a no-op on a cached guess: confirm it
                continue
            if kv is None:
                new.setdefault("metadata", {})["name"] = name
                if rtype.namespaced:
                    new["metadata"]["namespace"] = ns
            value = self.encode(new)
            rev, kv = await self.gw.put_if(key, value, kv.mod_revision if kv else 0)
            fresh = True
            if rev is None:
                self._remember(key, kv)
                continue
            self._remember(key, KV(key, value, 0, rev, 0))
            new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
            new["metadata"]["resourceVersion"] = str(rev)
            return new
        raise conflict(rtype.group_resource, name, rtype.plural)

    def _remember(self, key: str, kv: KV | None) -> None:
        if kv is None:
            self._cache.pop(key, None)
            return
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = kv

    async def namespace_state(self, ns: str) -> str | None:
        """None if the namespace does not exist, else its phase (Active or Terminating)."""
        kv, _ = await self.gw.get(NAMESPACE_TYPE.key(None, ns))
        if kv is None:
            return None
        obj = json.loads(kv.value)
        return "Terminating" if (obj.get("metadata") or {}).get("deletionTimestamp") else "Active"


def _token(next_key: str, revision: int) -> str:
    return base64.urlsafe_b64encode(dumps({"start": next_key, "rv": revision})).decode()


def finalize_write(
    rtype: ResourceType,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    sub: str = "",
    record: bool = True,
) -> dict[str, Any] | None:
    """Common rules of every update: immutable metadata kept, status/spec separation, generation, the
    field manager's ownership, and deletion once a terminating object has no finalizers left."""
    if old is not None:
        meta, ometa = new.setdefault("metadata", {}), old["metadata"]
        for k in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if k in ometa:
                meta[k] = ometa[k]
            else:
                meta.pop(k, None)
        if rtype.status:
            if sub == "status":
                merged = copy.deepcopy(old)
                if "status" in new:
                    merged["status"] = new["status"]
                else:
                    merged.pop("status", None)
                merged["metadata"] = {**merged["metadata"], "managedFields": meta.get("managedFields", [])}
                new = merged
            elif "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        gen = int(ometa.get("generation", 1))
        new["metadata"]["generation"] = gen + 1 if spec_part(new) != spec_part(old) else gen
    if record:
        managed.record_update(old, new, manager, rtype.api_version, sub)
    meta = new["metadata"]
    if meta.get("deletionTimestamp") and not meta.get("finalizers"):
        return None
    return new
