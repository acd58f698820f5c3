"""The simulator's control loop: watch the API, decide with the pure rules, write what changed.

One level-triggered loop, like a controller-runtime manager with a single worker: informers keep
local copies and wake the loop on any change; each pass recomputes every desired object from the
caches and writes only differences (server-side apply, field manager ``cozystack-simulator``; statuses
through ``/status`` where the kind has it). A pass also runs every ``resync`` seconds and when a
HelmRelease's install timer ends. Only the Lease holder writes; a standby keeps its caches warm so a
takeover acts at once. API errors (the stand-in's injected 500s and resets included) are logged and the
pass is retried shortly: every write is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from provisioner.lab.kube.cozysim import components, installer, kinds, platform, tenant_controller, upstream
from provisioner.lab.kube.cozysim import helmrelease as hrm
from provisioner.lab.kube.cozysim.informer import HTTPError, Informer
from provisioner.lab.kube.cozysim.kinds import Kind
from provisioner.lab.kube.cozysim.leader import LeaderElector
from provisioner.lab.kube.faults import KubeFaults

log = logging.getLogger("cozysim")
MANAGER = "cozystack-simulator"
SYSTEM_NS = "cozy-system"
WRITE_CONCURRENCY = 8


def _api_version(kind: Kind) -> tuple[str, str]:
    resource = kind.res._api_info.resource
    group = resource.group
    return (f"{group}/{resource.version}" if group else resource.version), resource.kind


def _subset(want: Any, have: Any) -> bool:
    """Whether every field of ``want`` is present with the same value in ``have`` (maps recurse)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_subset(v, have.get(k)) for k, v in want.items())
    return want == have


class Simulator:
    """Run the simulated Cozystack controllers against one API server."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        identity: str,
        delay: float = 2.0,
        faults: KubeFaults | None = None,
        resync: float = 5.0,
        lease_duration: int = 15,
        watch_idle: float = 15.0,
    ) -> None:
        self.client = client
        self.delay = delay
        self.faults = faults or KubeFaults()
        self.resync = resync
        self.elector = LeaderElector(client, identity, lease_duration)
        self._wake = asyncio.Event()
        self._attempts: dict[str, float] = {}
        self._next_timer: float | None = None
        self.applied_once: set[str] = set()
        self._errors = 0
        self.package_source_done = False

        def informer(kind: Kind, namespace: str | None = None) -> Informer:
            return Informer(client, kind, self._wake.set, namespace=namespace, idle=watch_idle)

        self.inf: dict[str, Informer] = {
            "ns": informer(kinds.NAMESPACE),
            "cm": informer(kinds.CONFIGMAP, SYSTEM_NS),
            "deploy": informer(kinds.DEPLOYMENT, SYSTEM_NS),
            "node": informer(kinds.NODE),
            "svc": informer(kinds.SERVICE),
            "apisvc": informer(kinds.APISERVICE),
            "hr": informer(kinds.HELMRELEASE),
            "pkg": informer(kinds.PACKAGE),
            "lsc": informer(kinds.LINSTORSATELLITECONFIG),
            "sat": informer(kinds.LINSTORSATELLITE),
            "lcl": informer(kinds.LINSTORCLUSTER),
            "kv": informer(kinds.KUBEVIRT),
            "cdi": informer(kinds.CDI),
            "pool": informer(kinds.IPADDRESSPOOL),
            "tenant": informer(kinds.TENANT),
        }

    # ----------------------------------------------------------------- process
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then release the lease."""
        tasks = [asyncio.create_task(i.run(), name=f"watch-{n}") for n, i in self.inf.items()]
        tasks.append(asyncio.create_task(self._elect(stop), name="elect"))
        try:
            while not stop.is_set():
                timeout = self.resync
                if self._next_timer is not None:
                    timeout = max(0.0, min(timeout, self._next_timer - time.monotonic()))
                waiter = asyncio.create_task(self._wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if stop.is_set():
                    break
                self._wake.clear()
                if self.elector.is_leader and self.inf["ns"].synced.is_set():
                    await self.reconcile_once()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.elector.release()

    async def _elect(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            was = self.elector.is_leader
            failed = False
            try:
                await self.elector.try_acquire_or_renew()
            except (ApiError, HTTPError, OSError) as exc:
                log.info("lease step failed: %s", exc)
                self.elector.check_deadline()
                failed = True
            if self.elector.is_leader and not was:
                self._wake.set()
            wait = self.elector.duration / 3 if self.elector.is_leader else 2.0
            if failed:
                wait = min(wait, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def reconcile_once(self) -> None:
        """One pass over everything; an API error ends the pass and schedules a retry."""
        self._next_timer = None
        try:
            await self._reconcile()
            self._errors = 0
        except (ApiError, HTTPError, OSError) as exc:
            self._errors += 1
            log.info("reconcile pass interrupted (%s); retrying", exc)
            self._schedule(min(0.2 * self._errors, 2.0))
        except Exception:  # a bug or an object nobody expected: keep serving the others, loudly
            self._errors += 1
            log.exception("reconcile pass failed; retrying")
            self._schedule(min(0.5 * self._errors, 10.0))

    def _schedule(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        if self._next_timer is None or at < self._next_timer:
            self._next_timer = at

    # ------------------------------------------------------------------ writes
    def _informer_for(self, kind: Kind) -> Informer | None:
        return next((i for i in self.inf.values() if i.kind is kind), None)

    async def apply(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``body`` as the simulator (force: the simulator owns what it applies)."""
        api_version, kind_name = _api_version(kind)
        body = {"apiVersion": api_version, "kind": kind_name, **body}
        meta = body["metadata"]
        obj = await self.client.patch(
            kind.res,
            meta["name"],
            body,
            namespace=meta.get("namespace") if kind.namespaced else None,
            patch_type=PatchType.APPLY,
            field_manager=MANAGER,
            force=True,
        )
        result = kinds.as_dict(obj)
        informer = self._informer_for(kind)
        if informer is not None:
            informer.store(result)
        return result

    async def apply_status(self, kind: Kind, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Write ``status`` of ``obj`` if it differs: a merge patch of /status (status wholly replaced).

        A merge patch (operation Update on the status subresource) rather than an apply: the stand-in
        keeps one managedFields entry per manager and operation, so a status apply by the manager that
        applied the spec would drop the spec (real servers keep one entry per subresource). Kinds
        without a status subresource (CDI) get their status applied together with their spec.
        """
        old = obj.get("status") or {}
        if old == status:
            return
        meta = kinds.meta(obj)
        if kind.status is None:
            ident = {"name": meta["name"], **({"namespace": meta["namespace"]} if kind.namespaced else {})}
            await self.apply(kind, {"metadata": ident, "spec": obj.get("spec") or {}, "status": status})
            return
        patch = {"status": {**{k: None for k in old if k not in status}, **status}}
        result = await self.client.patch(
            kind.status,
            meta["name"],
            patch,
            namespace=meta.get("namespace") if kind.namespaced else None,
            patch_type=PatchType.MERGE,
            field_manager=MANAGER,
        )
        informer = self._informer_for(kind)
        if informer is not None:
            informer.store(kinds.as_dict(result))

    async def ensure(self, kind: Kind, body: dict[str, Any], current: dict[str, Any] | None) -> None:
        """Apply ``body`` unless ``current`` already carries every field of it."""
        want = {k: v for k, v in body.items() if k in ("metadata", "spec", "data")}
        want["metadata"] = {
            k: v for k, v in (body.get("metadata") or {}).items() if k in ("labels", "annotations")
        }
        if current is not None and _subset(want, current):
            return
        await self.apply(kind, body)

    async def concurrently(self, writes: Sequence[Awaitable[Any]]) -> None:
        """Run independent writes ``WRITE_CONCURRENCY`` at a time (the API round trip dominates a pass).

        The first error is raised once all have ended, so the pass is retried as a whole.
        """
        gate = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def one(write: Awaitable[Any]) -> None:
            async with gate:
                await write

        results = await asyncio.gather(*(one(w) for w in writes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def ensure_crds(self, names: Iterable[str]) -> None:
        created = False
        for name in names:
            if name in self.applied_once:
                continue
            await self.apply(kinds.CRD, upstream.crd(name))
            self.applied_once.add(name)
            created = True
        if created:
            for informer in self.inf.values():
                informer.poke()

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> None:
        try:
            await self.client.delete(kind.res, name, namespace=namespace if kind.namespaced else None)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        informer = self._informer_for(kind)
        if informer is not None:
            informer.forget(namespace or "", name)

    # --------------------------------------------------------------- the pass
    async def _reconcile(self) -> None:
        if self.inf["ns"].get(SYSTEM_NS) is None:
            return
        rendered = await installer.render_and_apply(self)
        await self._helmreleases()
        if rendered is None:
            return
        await components.reconcile_nodes(self, rendered)
        await components.reconcile_components(self, rendered)
        await tenant_controller.reconcile_tenants(self, rendered)

    # ---------------------------------------------------------- HelmReleases
    def _elapsed(self, attempt: str) -> float | None:
        started = self._attempts.get(attempt)
        return None if started is None else time.monotonic() - started

    async def _helmreleases(self) -> None:
        cache = self.inf["hr"]
        if not cache.served:
            return
        stamp = kinds.now_text()
        live = set()
        writes: list[Awaitable[None]] = []
        for hr in list(cache.values()):
            meta = kinds.meta(hr)
            ns, name = meta.get("namespace", ""), meta.get("name", "")
            deps = {}
            for dep in (hr.get("spec") or {}).get("dependsOn") or ():
                if not isinstance(dep, dict):
                    continue
                dep_ns = dep.get("namespace") or ns
                deps[f"{dep_ns}/{dep.get('name')}"] = cache.get(dep.get("name", ""), dep_ns)
            faults = hrm.Faults(stuck=self.faults.is_stuck(ns, name), fail=self.faults.is_failed(ns, name))
            decision = hrm.decide(hr, deps, faults, elapsed=self._elapsed, delay=self.delay, now=stamp)
            if decision.attempt is not None:
                live.add(decision.attempt)
                self._attempts.setdefault(decision.attempt, time.monotonic())
                self._schedule(decision.finish_in or 0.0)
            if decision.status != (hr.get("status") or {}):
                writes.append(self.apply_status(kinds.HELMRELEASE, hr, decision.status))
        await self.concurrently(writes)
        self._attempts = {k: v for k, v in self._attempts.items() if k in live}

    def ready(self, name: str, namespace: str) -> bool:
        return hrm.is_ready(self.inf["hr"].get(name, namespace))

    def release_ready(self, rendered: platform.Platform, name: str) -> bool:
        release = rendered.release(name)
        return release is not None and self.ready(release.name, release.namespace)
