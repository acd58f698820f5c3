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
import copy
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from provisioner.lab.kube.cozysim import helmrelease as hrm
from provisioner.lab.kube.cozysim import kinds, network, platform, storage, tenancy, upstream, virt
from provisioner.lab.kube.cozysim.informer import HTTPError, Informer
from provisioner.lab.kube.cozysim.kinds import Kind
from provisioner.lab.kube.cozysim.leader import LeaderElector
from provisioner.lab.kube.faults import KubeFaults

log = logging.getLogger("cozysim")
MANAGER = "cozystack-simulator"
SYSTEM_NS = "cozy-system"
INSTALLER = "cozystack"
OPERATOR = "cozystack-operator"
PACKAGE = "cozystack.cozystack-platform"
TENANT_SERVICE_LABEL = "lab.provisioner/tenant-service"
TENANT_OWNER_LABEL = "lab.provisioner/tenant"
APISERVICE = "v1alpha1.apps.cozystack.io"
WRITE_CONCURRENCY = 8


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(kind: Kind) -> tuple[str, str]:
    resource = kind.res._api_info.resource
    group = resource.group
    return (f"{group}/{resource.version}" if group else resource.version), resource.kind


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


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
    ) -> None:
        self.client = client
        self.delay = delay
        self.faults = faults or KubeFaults()
        self.resync = resync
        self.elector = LeaderElector(client, identity, lease_duration)
        self._wake = asyncio.Event()
        self._attempts: dict[str, float] = {}
        self._next_timer: float | None = None
        self._applied_crds: set[str] = set()
        self._errors = 0
        self._package_source_done = False

        def informer(kind: Kind, namespace: str | None = None) -> Informer:
            return Informer(client, kind, self._wake.set, namespace=namespace)

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
        meta = _meta(obj)
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
            if name in self._applied_crds:
                continue
            await self.apply(kinds.CRD, upstream.crd(name))
            self._applied_crds.add(name)
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
        rendered = await self._platform()
        await self._helmreleases()
        if rendered is None:
            return
        await self._nodes(rendered)
        await self._components(rendered)
        await self._tenants(rendered)

    async def _platform(self) -> platform.Platform | None:
        """Render from the v1 Package (operator present) or the v0 ConfigMap (installer present)."""
        operator = self.inf["deploy"].get(OPERATOR, SYSTEM_NS)
        installer = self.inf["deploy"].get(INSTALLER, SYSTEM_NS)
        if operator is None and installer is None:
            return None
        if operator is not None:
            await self.ensure_crds(upstream.FLUX_CRDS)  # the operator installs CRDs and Flux first
            await self.ensure_crds(upstream.PACKAGE_CRDS)
            await self._deployment_status(operator, None)
            if not self.inf["pkg"].served:
                return None
            await self._package_source()
            package = self.inf["pkg"].get(PACKAGE)
            if package is None:
                return None
            try:
                rendered = platform.render_v1(package)
            except platform.RenderError as exc:
                reason, _, message = str(exc).partition(": ")
                await self._package_status(package, "False", reason, message)
                return None
            created = await self._apply_platform(rendered)
            if created:
                await self._package_status(
                    package,
                    "True",
                    "ReconciliationSucceeded",
                    f"reconciliation succeeded, generated {len(rendered.releases)} helmrelease(s)",
                )
            return rendered
        assert installer is not None
        config = self.inf["cm"].get("cozystack", SYSTEM_NS)
        try:
            if config is None:
                raise platform.RenderError("ERROR ConfigMap cozy-system/cozystack not found")
            rendered = platform.render_v0(config.get("data") or {})
        except platform.RenderError as exc:
            await self._render_event(str(exc))
            await self._deployment_status(installer, str(exc))
            return None
        # installer.sh renders the platform (namespaces-apply) before it installs Flux, so a
        # configuration that cannot render leaves no Flux CRDs behind either.
        await self._deployment_status(installer, None)
        await self.ensure_crds(upstream.FLUX_CRDS)
        await self._apply_platform(rendered)
        return rendered

    async def _deployment_status(self, deploy: dict[str, Any], failure: str | None) -> None:
        """The installer/operator Deployment's status: Available, or the render failure (module contract)."""
        previous = {c.get("type"): c for c in (deploy.get("status") or {}).get("conditions") or ()}
        stamp = now_text()
        if failure:
            available = ("False", "RenderFailed", f"platform render failed: {failure}")
            counts = {"replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1}
        else:
            available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
            counts = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
        conds = []
        for kind, (value, reason, message) in (
            ("Available", available),
            ("Progressing", ("True", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed.")),
        ):
            old = previous.get(kind) or {}
            since = old.get("lastTransitionTime") if old.get("status") == value else stamp
            conds.append(
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": since or stamp,
                    "lastUpdateTime": old.get("lastUpdateTime") if old.get("message") == message else stamp,
                }
            )
        status = {
            "observedGeneration": int(_meta(deploy).get("generation") or 1),
            **counts,
            "conditions": conds,
        }
        old_status = deploy.get("status") or {}
        same = {k: v for k, v in old_status.items() if k != "conditions"} == {
            k: v for k, v in status.items() if k != "conditions"
        } and [(c["type"], c["status"], c["reason"], c["message"]) for c in conds] == [
            (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
            for c in old_status.get("conditions") or ()
        ]
        if not same:
            await self.apply_status(kinds.DEPLOYMENT, deploy, status)

    async def _render_event(self, message: str) -> None:
        """A Warning Event ``RenderFailed`` on the installer Deployment, once per distinct message."""
        digest = hashlib.sha256(message.encode()).hexdigest()[:10]
        stamp = now_text()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{INSTALLER}.render-failed.{digest}", "namespace": SYSTEM_NS},
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": INSTALLER,
                "namespace": SYSTEM_NS,
            },
            "reason": "RenderFailed",
            "message": f"platform render failed: {message}",
            "type": "Warning",
            "source": {"component": "cozystack-installer"},
            "reportingComponent": "cozystack-installer",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.client.create(kinds.EVENT.res.from_dict(body))
        except ApiError as exc:
            if exc.status.code != 409:
                raise

    async def _package_source(self) -> None:
        body = {
            "metadata": {
                "name": PACKAGE,
                "annotations": {"operator.cozystack.io/skip-cozystack-values": "true"},
            },
            "spec": {
                "sourceRef": {"kind": "OCIRepository", "name": "cozystack-platform", "namespace": SYSTEM_NS},
                "variants": [
                    {"name": v, "components": [{"name": "platform", "path": "core/platform"}]}
                    for v in ("default", *platform.V1_VARIANTS)
                ],
            },
        }
        if not self._package_source_done:
            await self.apply(kinds.PACKAGESOURCE, body)
            self._package_source_done = True

    async def _package_status(self, package: dict[str, Any], value: str, reason: str, message: str) -> None:
        status = copy.deepcopy(package.get("status") or {})
        generation = int(_meta(package).get("generation") or 1)
        hrm.set_condition(status, "Ready", value, reason, message, generation, now_text())
        await self.apply_status(kinds.PACKAGE, package, status)

    async def _apply_platform(self, rendered: platform.Platform) -> bool:
        """Namespaces, HelmRepositories and HelmReleases; returns whether every HelmRelease exists."""
        root = tenancy.root(self._root_host(rendered))
        for name in rendered.namespaces:
            labels = {"cozystack.io/system": "true"}
            if name == SYSTEM_NS:
                labels["pod-security.kubernetes.io/enforce"] = "privileged"
            if name == tenancy.ROOT_NAMESPACE:
                labels = root.labels()
            body = {"metadata": {"name": name, "labels": labels}}
            await self.ensure(kinds.NAMESPACE, body, self.inf["ns"].get(name))
        if not self.inf["hr"].served:
            return False
        for ns, name in (platform.SYSTEM_REPO, platform.APPS_REPO, ("cozy-public", "cozystack-extra")):
            if f"repo:{ns}/{name}" in self._applied_crds:
                continue
            await self.apply(
                kinds.HELMREPOSITORY,
                {
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"interval": "5m", "url": f"http://{name}"},
                },
            )
            self._applied_crds.add(f"repo:{ns}/{name}")
        wanted = set()
        writes = []
        for release in rendered.releases:
            wanted.add((release.namespace, release.name))
            body = platform.helmrelease_manifest(release)
            writes.append(
                self.ensure(kinds.HELMRELEASE, body, self.inf["hr"].get(release.name, release.namespace))
            )
        await self.concurrently(writes)
        for hr in self.inf["hr"].values():
            labels = _meta(hr).get("labels") or {}
            if labels.get(platform.SYSTEM_APP_LABEL) == "true" and kinds.key(hr) not in wanted:
                log.info("release %s/%s no longer rendered: deleting", *kinds.key(hr))
                await self.delete(kinds.HELMRELEASE, _meta(hr)["name"], _meta(hr)["namespace"])
        return True

    def _root_host(self, rendered: platform.Platform) -> str:
        root = self.inf["tenant"].get("root", tenancy.ROOT_NAMESPACE)
        host = ((root or {}).get("spec") or {}).get("host")
        return str(host or rendered.root_host)

    # ---------------------------------------------------------- HelmReleases
    def _elapsed(self, attempt: str) -> float | None:
        started = self._attempts.get(attempt)
        return None if started is None else time.monotonic() - started

    async def _helmreleases(self) -> None:
        cache = self.inf["hr"]
        if not cache.served:
            return
        stamp = now_text()
        live = set()
        writes: list[Awaitable[None]] = []
        for hr in list(cache.values()):
            meta = _meta(hr)
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

    def _ready(self, name: str, namespace: str) -> bool:
        return hrm.is_ready(self.inf["hr"].get(name, namespace))

    def _release_ready(self, rendered: platform.Platform, name: str) -> bool:
        release = rendered.release(name)
        return release is not None and self._ready(release.name, release.namespace)

    # ------------------------------------------------------------------ Nodes
    async def _nodes(self, rendered: platform.Platform) -> None:
        """Node Ready follows the CNI releases (bundles without a CNI leave Nodes alone)."""
        if not rendered.cni:
            return
        cni_ready = all(self._ready(r.name, r.namespace) for r in rendered.cni)
        stamp = now_text()
        for node in self.inf["node"].values():
            status = dict(node.get("status") or {})
            conds = list(status.get("conditions") or [])
            previous = next((c for c in conds if c.get("type") == "Ready"), None)
            wanted = network.node_ready_condition(cni_ready, previous, stamp)
            if previous and all(previous.get(k) == wanted[k] for k in ("status", "reason")):
                continue
            status["conditions"] = [c for c in conds if c.get("type") != "Ready"] + [wanted]
            node = {**node, "status": status}
            result = await self.client.replace(kinds.NODE.status.from_dict(node))
            self.inf["node"].store(kinds.as_dict(result))

    # ------------------------------------------------------------- components
    async def _components(self, rendered: platform.Platform) -> None:
        if self._release_ready(rendered, "metallb"):
            await self.ensure_crds(upstream.METALLB_CRDS)
        if self._release_ready(rendered, "piraeus-operator"):
            await self.ensure_crds(upstream.PIRAEUS_CRDS)
        if self._release_ready(rendered, "linstor") and self.inf["lcl"].served:
            await self._storage()
        if self._release_ready(rendered, "kubevirt-operator"):
            await self.ensure_crds(upstream.KUBEVIRT_CRDS)
        if self._release_ready(rendered, "kubevirt") and self.inf["kv"].served:
            manifest = virt.kubevirt_manifest()
            current = self.inf["kv"].get("kubevirt", "cozy-kubevirt")
            await self.ensure(kinds.KUBEVIRT, manifest, current)
            current = self.inf["kv"].get("kubevirt", "cozy-kubevirt")
            if current is not None:
                await self.apply_status(kinds.KUBEVIRT, current, virt.kubevirt_status(current, now_text()))
        if self._release_ready(rendered, "kubevirt-cdi-operator"):
            await self.ensure_crds(upstream.CDI_CRDS)
        if self._release_ready(rendered, "kubevirt-cdi") and self.inf["cdi"].served:
            current = self.inf["cdi"].get("cdi")
            status = virt.cdi_status(current or {}, now_text())
            if current is None or (current.get("status") or {}) != status:
                await self.apply(kinds.CDI, {**virt.cdi_manifest(), "status": status})
        await self._ingress(rendered)

    async def _storage(self) -> None:
        cluster = {"metadata": {"name": "linstorcluster"}, "spec": {}}
        await self.ensure(kinds.LINSTORCLUSTER, cluster, self.inf["lcl"].get("linstorcluster"))
        if not (self.inf["sat"].served and self.inf["lsc"].served):
            return
        configs = self.inf["lsc"].values()
        applied_to: dict[str, list[str]] = {(_meta(c).get("name") or ""): [] for c in configs}
        stamp = now_text()
        for node in self.inf["node"].values():
            sat = storage.satellite(node, configs)
            for name in sat.configurations:
                applied_to[name].append(sat.name)
            body = {"metadata": {"name": sat.name}, "spec": sat.spec}
            current = self.inf["sat"].get(sat.name)
            if current is None or (current.get("spec") or {}) != sat.spec:
                current = await self.apply(kinds.LINSTORSATELLITE, body)
            generation = int(_meta(current).get("generation") or 1)
            previous = (current.get("status") or {}).get("conditions") or ()
            status = {
                "conditions": storage.satellite_conditions(sat, generation, stamp, previous),
                "storageProviders": list(sat.providers),
            }
            await self.apply_status(kinds.LINSTORSATELLITE, current, status)
        for config in configs:
            name = _meta(config).get("name") or ""
            generation = int(_meta(config).get("generation") or 1)
            lsc_status = copy.deepcopy(config.get("status") or {})
            hrm.set_condition(
                lsc_status, "Applied", "True", "AsExpected", "Resources applied", generation, stamp
            )
            lsc_status["matched"] = len(applied_to[name])
            lsc_status["appliedTo"] = sorted(applied_to[name])
            await self.apply_status(kinds.LINSTORSATELLITECONFIG, config, lsc_status)

    async def _ingress(self, rendered: platform.Platform) -> None:
        root_tenant = self.inf["tenant"].get("root", tenancy.ROOT_NAMESPACE)
        if not root_tenant or (root_tenant.get("spec") or {}).get("ingress") is not True:
            return
        if not self._ready("ingress", tenancy.ROOT_NAMESPACE):
            return
        external = rendered.external_ips if rendered.expose_ingress == tenancy.ROOT_NAMESPACE else ()
        body = network.ingress_service(tenancy.ROOT_NAMESPACE, external)
        current = self.inf["svc"].get(network.INGRESS_SERVICE, tenancy.ROOT_NAMESPACE)
        await self.ensure(kinds.SERVICE, body, current)
        current = self.inf["svc"].get(network.INGRESS_SERVICE, tenancy.ROOT_NAMESPACE)
        if current is None or external or not self.inf["pool"].served:
            return
        ingress = ((current.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress:
            return
        pool = network.first_pool(self.inf["pool"].values())
        if pool is None:
            return
        in_use = {
            entry.get("ip")
            for svc in self.inf["svc"].values()
            for entry in (((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ())
        }
        address = network.allocate(pool, {a for a in in_use if a})
        if address:
            await self.apply_status(kinds.SERVICE, current, {"loadBalancer": {"ingress": [{"ip": address}]}})

    # ---------------------------------------------------------------- Tenants
    async def _tenants(self, rendered: platform.Platform) -> None:
        if not (self._release_ready(rendered, "cozystack-api") and self._ready("tenant-root", "tenant-root")):
            return
        if self.inf["apisvc"].get(APISERVICE) is None:
            await self.apply(
                kinds.APISERVICE,
                {
                    "metadata": {"name": APISERVICE},
                    "spec": {
                        "group": "apps.cozystack.io",
                        "version": "v1alpha1",
                        "service": {"name": "cozystack-api", "namespace": SYSTEM_NS},
                        "groupPriorityMinimum": 1000,
                        "versionPriority": 15,
                    },
                },
            )
            self.inf["tenant"].poke()
        cache = self.inf["tenant"]
        if not cache.served:
            return
        if cache.get("root", tenancy.ROOT_NAMESPACE) is None:
            body = {
                "apiVersion": "apps.cozystack.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": "root", "namespace": tenancy.ROOT_NAMESPACE},
                "spec": {"host": rendered.root_host},
            }
            try:
                cache.store(kinds.as_dict(await self.client.create(kinds.TENANT.res.from_dict(body))))
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
        live: set[tuple[str, str]] = set()
        for tenant in cache.values():
            await self._tenant(tenant, live)
        await self._forget_tenants(live)

    async def _tenant(self, tenant: dict[str, Any], live: set[tuple[str, str]]) -> None:
        meta = _meta(tenant)
        parent_ns, name = meta.get("namespace", ""), meta.get("name", "")
        spec = tenant.get("spec") or {}
        if parent_ns == tenancy.ROOT_NAMESPACE and name == "root":
            await self._tenant_services(tenancy.ROOT_NAMESPACE, spec, f"{parent_ns}/{name}")
            hr = self.inf["hr"].get("tenant-root", tenancy.ROOT_NAMESPACE)
            await self._tenant_status(tenant, tenancy.ROOT_NAMESPACE, hr)
            return
        parent_obj = self.inf["ns"].get(parent_ns)
        parent = tenancy.TenantNamespace.from_labels(parent_ns, (_meta(parent_obj or {}).get("labels") or {}))
        if parent is None:
            await self._tenant_status(tenant, "", None, f"namespace {parent_ns} is not a tenant namespace")
            return
        try:
            resolved = tenancy.child(parent, name, spec)
        except tenancy.TenantError as exc:
            await self._tenant_status(tenant, "", None, str(exc))
            return
        release = platform.Release(
            name=f"tenant-{name}",
            namespace=parent_ns,
            release_name=f"tenant-{name}",
            chart="tenant",
            depends_on=(),
            repo=platform.APPS_REPO,
            system_app=False,
            values=dict(spec),
        )
        body = platform.helmrelease_manifest(release)
        body["metadata"]["labels"][TENANT_OWNER_LABEL] = f"{parent_ns}.{name}"
        live.add((parent_ns, release.name))
        await self.ensure(kinds.HELMRELEASE, body, self.inf["hr"].get(release.name, parent_ns))
        hr = self.inf["hr"].get(release.name, parent_ns)
        if hrm.is_ready(hr):
            ns_body = {"metadata": {"name": resolved.name, "labels": resolved.labels()}}
            await self.ensure(kinds.NAMESPACE, ns_body, self.inf["ns"].get(resolved.name))
            live.add((resolved.name, ""))
            await self._tenant_services(resolved.name, spec, f"{parent_ns}.{name}")
        elif self.inf["ns"].get(resolved.name) is not None:
            live.add((resolved.name, ""))
        await self._tenant_status(tenant, resolved.name, hr)

    async def _tenant_services(self, namespace: str, spec: dict[str, Any], owner: str) -> None:
        """The HelmReleases a tenant's chart renders in its namespace (once the tenant release is Ready)."""
        wanted = tenancy.service_releases(spec)
        for service in wanted:
            release = platform.Release(
                name=service,
                namespace=namespace,
                release_name=service,
                chart=service,
                depends_on=(),
                repo=platform.APPS_REPO,
                system_app=False,
            )
            body = platform.helmrelease_manifest(release)
            labels = body["metadata"]["labels"]
            for k in [k for k in labels if k.startswith("apps.cozystack.io/")]:
                del labels[k]
            labels[TENANT_SERVICE_LABEL] = service
            labels[TENANT_OWNER_LABEL] = owner.replace("/", ".")
            await self.ensure(kinds.HELMRELEASE, body, self.inf["hr"].get(service, namespace))
        for hr in [h for h in self.inf["hr"].values() if _meta(h).get("namespace") == namespace]:
            rendered_for = (_meta(hr).get("labels") or {}).get(TENANT_SERVICE_LABEL)
            if rendered_for and rendered_for not in wanted:
                await self.delete(kinds.HELMRELEASE, _meta(hr)["name"], namespace)

    async def _tenant_status(
        self, tenant: dict[str, Any], namespace: str, hr: dict[str, Any] | None, problem: str | None = None
    ) -> None:
        """Tenant status as cozystack-api shows it: the HelmRelease's Ready/Released conditions, namespace."""
        status: dict[str, Any] = {}
        if namespace:
            status["namespace"] = namespace
        generation = int(_meta(tenant).get("generation") or 1)
        if problem:
            status["conditions"] = []
            hrm.set_condition(status, "Ready", "False", "InvalidTenant", problem, generation, now_text())
        else:
            hr_status = (hr or {}).get("status") or {}
            status["conditions"] = [
                c for c in hr_status.get("conditions") or () if c.get("type") in ("Ready", "Released")
            ]
            if hr_status.get("lastAttemptedRevision"):
                status["version"] = hr_status["lastAttemptedRevision"]
        await self.apply_status(kinds.TENANT, tenant, status)

    async def _forget_tenants(self, live: set[tuple[str, str]]) -> None:
        """A deleted Tenant takes its HelmRelease and namespace with it (helm uninstall upstream)."""
        for hr in list(self.inf["hr"].values()):
            labels = _meta(hr).get("labels") or {}
            if (
                TENANT_OWNER_LABEL in labels
                and TENANT_SERVICE_LABEL not in labels
                and kinds.key(hr) not in live
            ):
                meta = _meta(hr)
                log.info("tenant of %s/%s is gone: deleting", meta["namespace"], meta["name"])
                await self.delete(kinds.HELMRELEASE, meta["name"], meta["namespace"])
                parent, _, name = labels[TENANT_OWNER_LABEL].partition(".")
                child = f"tenant-{name}" if parent == tenancy.ROOT_NAMESPACE else f"{parent}-{name}"
                if self.inf["ns"].get(child) is not None and (child, "") not in live:
                    await self.delete(kinds.NAMESPACE, child)
