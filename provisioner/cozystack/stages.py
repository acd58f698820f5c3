"""The platform stages, in order: api-ready, contract, installer-assets, helmreleases, storage,
virtualization, networking, tenants (``PLATFORM_STAGES``; the names are part of the state layout).

Each stage is a ``pipeline.base.Stage``: it records completion in ``layout.platform_stage(name)``
(JSON, atomic), so a rerun skips it, and its work is safe to repeat after a crash at any point
(server-side apply with fixed names; writes skipped when live already matches, ``apply.py``).
Split of the v0/v1 contract over two stages: ``contract`` applies what configures the platform
(v0: namespace + ConfigMap; v1: CRDs + Package), ``installer-assets`` applies the pinned installer
(v0) or operator (v1) manifest, so the installer never starts without its configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InputError, OperationError
from ..fsutil import atomic_write
from ..pipeline.base import Stage, StageFailed
from ..tenants import tree_for
from . import assets, health, manifests
from .releases import ExpectedRelease, cozystack_major, expected_releases

if TYPE_CHECKING:
    from ..bundles import Bundle
    from ..inventory.model import Site
    from ..layout import StateLayout
    from ..pipeline.context import RunContext
    from .apply import Applier
    from .kube import Kube

T = TypeVar("T")
HR = ("helm.toolkit.fluxcd.io/v2", "HelmRelease")


# -- shared plumbing
def kubeconfig_path(ctx: RunContext) -> Path:
    """Full bundles: the kubeconfig cluster formation wrote; hosted: the inventory's."""
    explicit = getattr(ctx, "kubeconfig", None)
    if explicit:
        return Path(explicit)
    site = ctx.site
    if site.cluster.bundle_spec.hosted and site.hosted is not None:
        return site.base_dir / site.hosted.kubeconfig
    return ctx.layout.kubeconfig


def open_kube(ctx: RunContext) -> Kube:
    """The API client for this run (``api_attempts`` in the options bounds the retries)."""
    path = kubeconfig_path(ctx)
    if not path.is_file():
        if ctx.site.cluster.bundle_spec.hosted:
            raise InputError(f"hosted.kubeconfig: {path} does not exist")
        raise InputError(
            f"{path} does not exist yet: the cluster stage writes it (run `provisioner up` first)"
        )
    # lightkube (with httpx, ~20 MB) is loaded here, when a Kubernetes stage first runs, not when
    # `up` starts: the node stages before never need it.
    from .kube import Kube

    return Kube(path, attempts=int(ctx.options.get("api_attempts") or 8))


def account(ctx: RunContext, kube: Kube, applier: Applier) -> None:
    """Add a stage's API use to the run's totals (the CLI summary and bench-platform read them)."""
    totals = ctx.options.setdefault(
        "_accounting", {"writes": [], "objects": 0, "apply_requests": 0, "by_verb": {}}
    )
    totals["writes"].extend(applier.written)
    totals["objects"] += len(applier.written) + len(applier.skipped)
    totals["apply_requests"] += applier.requests
    totals["retries"] = totals.get("retries", 0) + kube.counters.retries
    for verb, n in kube.counters.by_verb.items():
        totals["by_verb"][verb] = totals["by_verb"].get(verb, 0) + n


def read_record(layout: StateLayout, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads(layout.platform_stage(name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_record(layout: StateLayout, name: str, data: dict[str, Any]) -> None:
    atomic_write(layout.platform_stage(name), json.dumps(data, indent=1, sort_keys=True), mode=0o600)


def _say(ctx: RunContext, stage: str, status: str, message: str, level: str = "info") -> None:
    ctx.progress.stage(stage, status, message, level=level)


async def poll(check: Callable[[], Awaitable[T | None]], deadline: float, interval: float = 1.0) -> T | None:
    """Call ``check`` until it returns a value other than None, or the deadline passes (None)."""
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _deadline(ctx: RunContext) -> float:
    return time.monotonic() + float(ctx.options.get("timeout") or ctx.site.cluster.timeouts.platform)


def inputs_digest(name: str, site: Site) -> str:
    """A digest of what stage ``name`` derives from the inventory (and pinned assets), recorded
    with its completion: when the inventory changes, ``stale`` tells a rerun to run it again."""
    from .apply import digest

    v1 = cozystack_major(site.cluster.cozystack_version) == 1
    parts: dict[str, Any] = {"bundle": site.cluster.bundle.value, "version": site.cluster.cozystack_version}
    if name == "api-ready":
        parts["nodes"] = {n.name: str(n.ip) for n in site.nodes}
    elif name == "contract":
        parts["objects"] = manifests.platform_package(site) if v1 else manifests.configmap(site)
    elif name == "installer-assets":
        parts["assets"] = assets.pins(site)
        parts["endpoint"] = site.api_endpoint
    elif name == "helmreleases":
        parts["expected"] = sorted(expected_for(site))
    elif name == "storage":
        parts["objects"] = [*manifests.satellite_configurations(site), *manifests.storage_classes(site)]
    elif name == "networking":
        parts["objects"] = manifests.metallb_objects(site)
        parts["external"] = [str(ip) for ip in site.platform.expose_external_ips]
    elif name == "tenants":
        parts["objects"] = manifests.tenant_objects(site, v1)
    return digest(parts)


def stale(stage: Stage, site: Site, layout: StateLayout) -> bool:
    """True when ``stage`` is recorded as done for other inputs than the site's current ones."""
    rec = read_record(layout, stage.name)
    if not rec:
        return False
    if stage.name == "helmreleases":  # its record's shape is fixed (the HTML report reads it)
        return set(rec.get("releases") or {}) != set(expected_for(site))
    return rec.get("inputs") not in (None, inputs_digest(stage.name, site))


class _PlatformStage:
    """Common parts: applies to every bundle, done when the record says completed."""

    name = ""

    def applies(self, bundle: Bundle) -> bool:
        return True

    def done(self, layout: StateLayout) -> bool:
        rec = read_record(layout, self.name)
        return bool(rec and rec.get("completed"))

    def outdated(self, site: Site, layout: StateLayout) -> bool:
        """Done, but for other inventory inputs: the pipeline runs the stage again."""
        return stale(self, site, layout)

    async def run(self, ctx: RunContext) -> None:
        from .apply import Applier

        kube = open_kube(ctx)
        try:
            applier = Applier(kube, ctx.layout.platform_journal)
            record = await self.work(ctx, kube, applier)
        finally:
            await kube.close()
        record.update(
            {
                "stage": self.name,
                "inputs": inputs_digest(self.name, ctx.site),
                "completed": time.time(),
                "writes": len(applier.written),
                "skipped": len(applier.skipped),
            }
        )
        write_record(ctx.layout, self.name, record)
        account(ctx, kube, applier)

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        raise NotImplementedError


# -- 1. api-ready
async def wait_for_api(kube: Kube, deadline: float, interval: float = 2.0) -> None:
    """Wait until the API answers, retrying connection errors and 5xx until ``deadline``.

    The cluster this run just formed serves its API some seconds after etcd forms (much later under
    emulation), so an unreachable endpoint is not yet a failure. Refusals (4xx, a foreign CA) are.
    """
    from .kube import ApiCallError

    last: OperationError | None = None

    async def answers() -> bool | None:
        nonlocal last
        try:
            await kube.server_version()
        except ApiCallError as exc:
            if exc.code < 500:
                raise
            last = exc
            return None
        except OperationError as exc:
            last = exc
            return None
        return True

    if await poll(answers, deadline, interval) is None:
        assert last is not None
        raise last


class ApiReady(_PlatformStage):
    name = "api-ready"

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        _say(ctx, self.name, "running", f"API {kube.endpoint} (kubeconfig {kube.kubeconfig})")
        site = ctx.site
        if site.cluster.bundle_spec.hosted:
            await kube.server_version()  # a hosted cluster exists already: unreachable fails at once
            return {"endpoint": kube.endpoint}
        deadline = _deadline(ctx)
        await wait_for_api(kube, deadline)
        want = {n.name: str(n.ip) for n in site.nodes}
        problems: list[str] = []

        async def nodes_match() -> bool | None:
            nonlocal problems
            live = {}
            for node in await kube.list("v1", "Node"):
                addrs = (node.get("status") or {}).get("addresses") or []
                live[node["metadata"]["name"]] = [
                    a.get("address") for a in addrs if a.get("type") == "InternalIP"
                ]
            problems = []
            for name, ip in want.items():
                if name not in live:
                    problems.append(f"node {name} ({ip}) is not registered as a Kubernetes Node")
                elif ip not in live[name]:
                    problems.append(
                        f"Node {name} has InternalIP {', '.join(live[name]) or 'none'}, inventory {ip}"
                    )
            return True if not problems else None

        if await poll(nodes_match, deadline, 2.0) is None:
            raise StageFailed("; ".join(problems))
        return {"endpoint": kube.endpoint, "nodes": sorted(want)}


# -- 2. contract
class Contract(_PlatformStage):
    name = "contract"

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        site = ctx.site
        namespace = _system_namespace(site)
        if cozystack_major(site.cluster.cozystack_version) == 0:
            objs = [namespace, manifests.configmap(site)]
            writes = await applier.ensure_all(objs)
            _say(ctx, self.name, "done", f"ConfigMap cozy-system/cozystack ({writes} writes)")
            return {"version": site.cluster.cozystack_version, "objects": [_name(o) for o in objs]}
        docs = assets.load(site)["cozystack-crds.yaml"]
        await applier.ensure_all(docs)
        deadline = _deadline(ctx)

        async def established() -> bool | None:
            crd = await kube.get(
                "apiextensions.k8s.io/v1", "CustomResourceDefinition", "packages.cozystack.io"
            )
            ok = crd is not None and (health.condition(crd, "Established") or {}).get("status") == "True"
            return True if ok else None

        if await poll(established, deadline) is None:
            raise StageFailed("CustomResourceDefinition packages.cozystack.io never became Established")
        package = manifests.platform_package(site)
        await applier.ensure_all([namespace, package])
        _say(ctx, self.name, "done", f"Package {manifests.PACKAGE_NAME} variant {package['spec']['variant']}")
        return {"version": site.cluster.cozystack_version, "objects": [_name(d) for d in [*docs, package]]}


def _system_namespace(site: Site) -> dict[str, Any]:
    """cozy-system exactly as the pinned installer/operator manifest declares it (when it does), so
    the contract and the installer apply one identical object instead of two competing ones."""
    for docs in assets.load(site).values():
        for doc in docs:
            if doc.get("kind") == "Namespace" and doc["metadata"]["name"] == manifests.SYSTEM_NAMESPACE:
                return doc
    return manifests.system_namespace()


def _name(obj: dict[str, Any]) -> str:
    from .kube import obj_key

    return obj_key(obj)


# -- 3. installer-assets
class InstallerAssets(_PlatformStage):
    name = "installer-assets"

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        site = ctx.site
        loaded = assets.load(site)
        name = next(n for n in assets.asset_names(site) if n != "cozystack-crds.yaml")
        docs = loaded[name]
        if site.cluster.bundle_spec.hosted:
            # No KubePrism off Talos: the installer must talk to the real endpoint.
            docs = manifests.point_installer_at(docs, site.api_endpoint or kube.endpoint)
        writes = await applier.ensure_all(docs)
        _say(ctx, self.name, "done", f"{name} applied ({len(docs)} objects, {writes} writes)")
        return {"assets": assets.pins(site), "applied": name}


# -- 4. helmreleases
def expected_for(site: Site) -> dict[str, ExpectedRelease]:
    plat = site.platform
    enable, disable = list(plat.bundle_enable), manifests.bundle_disable(site)
    if cozystack_major(site.cluster.cozystack_version) == 1:
        enable = [n.removeprefix("cozystack.") for n in enable]
        disable = [n.removeprefix("cozystack.") for n in disable]
    return expected_releases(site.cluster.bundle.value, enable, disable, plat.oidc_enabled)


class HelmReleases(_PlatformStage):
    """Wait, with one watch, until every expected HelmRelease is Ready; nudge stuck ones a bounded
    number of times; on failure name the root causes and what they block."""

    name = "helmreleases"

    def done(self, layout: StateLayout) -> bool:
        rec = read_record(layout, self.name)
        return bool(
            rec and rec.get("releases") and all(r.get("ready") is True for r in rec["releases"].values())
        )

    async def run(self, ctx: RunContext) -> None:
        from .apply import Applier

        kube = open_kube(ctx)
        try:
            applier = Applier(kube, ctx.layout.platform_journal)
            await self.wait(ctx, kube, applier)
        finally:
            await kube.close()
        account(ctx, kube, applier)

    async def wait(self, ctx: RunContext, kube: Kube, applier: Applier) -> None:
        from .kube import ApiCallError

        site = ctx.site
        expected = expected_for(site)
        live: dict[str, dict[str, Any]] = {}
        policy = health.NudgePolicy(
            max_nudges=int(ctx.options.get("nudge_max", 3)),
            interval=float(ctx.options.get("nudge_interval", 30.0)),
            stuck_for=float(ctx.options.get("nudge_after", 20.0)),
        )
        deadline = _deadline(ctx)
        changed = asyncio.Event()
        last_written: dict[str, Any] | None = None
        last_line = ""
        gave_up: dict[str, float] = {}

        idle = float(ctx.options.get("watch_idle", 30.0))

        async def watcher() -> None:
            # List, then one watch over every HelmRelease; a watch that ends, errs or goes silent
            # for ``idle`` seconds (a stalled stream) is replaced after a fresh list.
            while True:
                try:
                    fresh = {_key(hr): hr for hr in await kube.list(*HR)}
                except ApiCallError as exc:
                    if exc.code != 404:
                        raise
                    await asyncio.sleep(1.0)  # Flux's CRDs are not installed yet: nothing to watch
                    continue
                live.clear()
                live.update(fresh)
                changed.set()
                stream = kube.watch(*HR, server_timeout=int(idle * 3)).__aiter__()
                try:
                    while True:
                        event, hr = await asyncio.wait_for(stream.__anext__(), timeout=idle)
                        if event == "DELETED":
                            live.pop(_key(hr), None)
                        else:
                            live[_key(hr)] = hr
                        changed.set()
                except (TimeoutError, StopAsyncIteration):
                    pass
                finally:
                    # Bounded: closing a stream whose connection hangs unanswered (a dropped
                    # connection, an API fault) waited forever and the stage never returned.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.aclose(), 5.0)  # type: ignore[attr-defined]
                await asyncio.sleep(0.1)

        task = asyncio.create_task(watcher())
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=1.0)
                changed.clear()
                if task.done():
                    task.result()  # a watcher error (unreachable API, foreign CA) ends the wait
                states = {k: health.release_state(live.get(k)) for k in expected}
                record = health.release_record(expected, states)
                if record != last_written:
                    write_record(
                        ctx.layout,
                        self.name,
                        {"bundle": site.cluster.bundle.value, "releases": record, "updated": time.time()},
                    )
                    last_written = record
                line = health.progress_line(record)
                if line != last_line:
                    _say(ctx, self.name, "running", line)
                    last_line = line
                if all(r["ready"] is True for r in record.values()):
                    _say(ctx, self.name, "done", line)
                    return
                now = time.monotonic()
                for key, st in states.items():
                    action = policy.next_action(key, st, now)
                    if action:
                        await self.nudge(ctx, kube, applier, key, action, st)
                    elif policy.exhausted(key) and st.ready is False and st.reason in health.NUDGE_REASONS:
                        gave_up.setdefault(key, now)
                    else:
                        gave_up.pop(key, None)
                permanent = [k for k, t in gave_up.items() if now - t >= policy.interval]
                if permanent or now >= deadline:
                    lines = health.failure_summary(record)
                    why = (
                        f"still failing after {policy.max_nudges} nudges: {', '.join(sorted(permanent))}"
                        if permanent
                        else f"timeouts.platform ({ctx.site.cluster.timeouts.platform:.0f}s) ran out"
                    )
                    raise StageFailed(f"HelmReleases not Ready ({why}):\n  " + "\n  ".join(lines))
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=10.0)  # a watcher stuck in a hung close is left behind

    async def nudge(
        self, ctx: RunContext, kube: Kube, applier: Applier, key: str, action: str, st: health.ReleaseState
    ) -> None:
        ns, name = key.split("/", 1)
        base = {"apiVersion": HR[0], "kind": HR[1]}
        if action == "reconcile":
            token = str(int(time.time() * 1000))
            await kube.apply(
                {
                    **base,
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "annotations": {"reconcile.fluxcd.io/requestedAt": token},
                    },
                }
            )
        else:
            meta = {"name": name, "namespace": ns}
            await kube.apply({**base, "metadata": meta, "spec": {"suspend": True}})
            await kube.apply({**base, "metadata": meta, "spec": {"suspend": False}})
        applier.written.append(f"HelmRelease {key} ({action})")
        msg = f"nudged {key} ({action}) after {st.reason}: {st.message}"
        _say(ctx, self.name, "nudge", msg, level="warning")
        ctx.events.append("platform.nudge", None, "ok", release=key, action=action, reason=st.reason)


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


# -- 5. storage
class Storage(_PlatformStage):
    name = "storage"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.has_linstor and not bundle.hosted

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        site = ctx.site
        nodes = manifests.storage_nodes(site)
        pool = site.platform.storage.pool_name
        if len(nodes) < 3:
            _say(
                ctx,
                self.name,
                "warning",
                f"only {len(nodes)} node(s) with data disks: StorageClass replicated places "
                f"{manifests.autoplace(site)} replica(s), not 3",
                level="warning",
            )
        await applier.ensure_all(
            [*manifests.satellite_configurations(site), *manifests.storage_classes(site)]
        )
        problems: dict[str, str] = {}

        async def pools_ready() -> bool | None:
            nonlocal problems
            sats = {s["metadata"]["name"]: s for s in await kube.list("piraeus.io/v1", "LinstorSatellite")}
            problems = health.satellite_problems(sats, nodes, pool)
            return True if not problems else None

        # The pools' own time box: a missing disk never heals by waiting (storage_timeout overrides).
        wait = float(ctx.options.get("storage_timeout") or min(600.0, ctx.site.cluster.timeouts.platform))
        if await poll(pools_ready, time.monotonic() + wait, 2.0) is None:
            disks = {n.name: ", ".join(n.data_disks) for n in site.nodes}
            raise StageFailed(
                f"storage pool {pool} is not ready on: "
                + "; ".join(
                    f"node {n} (data_disks {disks.get(n)}): {why}" for n, why in sorted(problems.items())
                )
            )
        _say(ctx, self.name, "done", f"pool {pool} on {len(nodes)} nodes; StorageClasses local, replicated")
        return {"pool": pool, "nodes": nodes, "autoPlace": manifests.autoplace(site)}


# -- 6. virtualization
class Virtualization(_PlatformStage):
    name = "virtualization"

    def applies(self, bundle: Bundle) -> bool:
        return bool(bundle.virtualization)

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        problems: list[str] = []

        async def healthy() -> bool | None:
            nonlocal problems
            kv = await kube.get("kubevirt.io/v1", "KubeVirt", "kubevirt", "cozy-kubevirt")
            cdi = await kube.get("cdi.kubevirt.io/v1beta1", "CDI", "cdi")
            problems = [
                f"KubeVirt cozy-kubevirt/kubevirt: {p}" for p in health.operator_cr_health(kv, "KubeVirt")
            ]
            problems += [f"CDI cdi: {p}" for p in health.operator_cr_health(cdi, "CDI")]
            return True if not problems else None

        if await poll(healthy, _deadline(ctx), 2.0) is None:
            raise StageFailed("virtualization is not healthy: " + "; ".join(problems))
        _say(ctx, self.name, "done", "KubeVirt and CDI available")
        return {"kubevirt": "healthy", "cdi": "healthy"}


# -- 7. networking
INGRESS_SERVICE = ("tenant-root", "root-ingress-controller")


def ingress_problem(site: Site, svc: dict[str, Any] | None) -> str | None:
    """Why the tenant-root ingress Service is not published as the inventory says; None if it is."""
    if svc is None:
        return f"Service {'/'.join(INGRESS_SERVICE)} does not exist yet"
    ips = [str(ip) for ip in site.platform.expose_external_ips]
    if ips:
        got = (svc.get("spec") or {}).get("externalIPs") or []
        return None if sorted(got) == sorted(ips) else f"externalIPs {got}, inventory {ips}"
    rng = site.networks.metallb.range if site.networks and site.networks.metallb else None
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addrs = [i.get("ip") for i in ingress if i.get("ip")]
    if not addrs:
        return f"Service {'/'.join(INGRESS_SERVICE)} has no load-balancer address yet"
    if rng is not None:
        import netaddr

        outside = [a for a in addrs if netaddr.IPAddress(a) not in rng]
        if outside:
            return f"address {', '.join(outside)} is outside the MetalLB range {rng[0]}-{rng[-1]}"
    return None


class Networking(_PlatformStage):
    name = "networking"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.metallb and not bundle.hosted

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        site = ctx.site
        objs = manifests.metallb_objects(site)
        await applier.ensure_all(objs)
        svc = await kube.get("v1", "Service", INGRESS_SERVICE[1], INGRESS_SERVICE[0])
        verified = svc is not None and ingress_problem(site, svc) is None
        what = "MetalLB pool cozystack" if objs else "external IPs"
        _say(ctx, self.name, "done", f"{what}; ingress {'verified' if verified else 'verified by tenants'}")
        return {"pool": [o["spec"].get("addresses") for o in objs[:1]], "ingressVerified": verified}


# -- 8. tenants
TENANT = ("apps.cozystack.io/v1alpha1", "Tenant")


class Tenants(_PlatformStage):
    name = "tenants"

    def applies(self, bundle: Bundle) -> bool:
        return bundle.has_multitenancy

    async def work(self, ctx: RunContext, kube: Kube, applier: Applier) -> dict[str, Any]:
        site = ctx.site
        v1 = cozystack_major(site.cluster.cozystack_version) == 1
        deadline = _deadline(ctx)
        tenants = manifests.tenant_objects(site, v1)
        for obj in tenants:  # parents first: each in its parent's namespace, which the parent creates
            await applier.ensure(obj)
            name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]

            async def ready(name: str = name, ns: str = ns) -> bool | None:
                live = await kube.get(*TENANT, name, ns)
                c = health.condition(live or {}, "Ready")
                return True if c and c.get("status") == "True" else None

            if await poll(ready, deadline, 1.0) is None:
                live = await kube.get(*TENANT, name, ns)
                c = health.condition(live or {}, "Ready") or {}
                raise StageFailed(
                    f"Tenant {ns}/{name} is not Ready: {c.get('reason', '')} {c.get('message', '')}"
                )
            _say(ctx, self.name, "running", f"Tenant {ns}/{name} ready")
        root = tree_for(site)
        problems: list[str] = []

        async def labels_match() -> bool | None:
            nonlocal problems
            namespaces = {n["metadata"]["name"]: n for n in await kube.list("v1", "Namespace")}
            problems = health.tenant_label_problems(root, namespaces, root_host_only=v1)
            return True if not problems else None

        if await poll(labels_match, min(deadline, time.monotonic() + 60), 1.0) is None:
            raise StageFailed("tenant namespaces differ from the inventory: " + "; ".join(problems))
        extras = await self.extras(ctx, kube, tenants)
        if (
            site.cluster.bundle_spec.metallb
            and not site.cluster.bundle_spec.hosted
            and site.tenant_root.ingress
        ):
            await self.verify_ingress(ctx, kube, deadline)
        _say(ctx, self.name, "done", f"{len(tenants)} tenants ready, namespace labels verified")
        return {
            "tenants": [f"{t['metadata']['namespace']}/{t['metadata']['name']}" for t in tenants],
            "extra": extras,
        }

    async def extras(self, ctx: RunContext, kube: Kube, tenants: list[dict[str, Any]]) -> list[str]:
        known = {(t["metadata"]["namespace"], t["metadata"]["name"]) for t in tenants}
        extra = sorted(
            f"{t['metadata']['namespace']}/{t['metadata']['name']}"
            for t in await kube.list(*TENANT)
            if (t["metadata"].get("namespace"), t["metadata"]["name"]) not in known
        )
        for key in extra:
            if ctx.options.get("prune"):
                ns, name = key.split("/", 1)
                await kube.delete(*TENANT, name, ns)
                _say(
                    ctx,
                    self.name,
                    "pruned",
                    f"Tenant {key} is not in the inventory: deleted",
                    level="warning",
                )
            else:
                _say(
                    ctx,
                    self.name,
                    "extra",
                    f"Tenant {key} is not in the inventory (left alone; --prune deletes)",
                    level="warning",
                )
        return extra

    async def verify_ingress(self, ctx: RunContext, kube: Kube, deadline: float) -> None:
        site = ctx.site
        problem: str | None = None

        async def published() -> bool | None:
            nonlocal problem
            problem = ingress_problem(
                site, await kube.get("v1", "Service", INGRESS_SERVICE[1], INGRESS_SERVICE[0])
            )
            return True if problem is None else None

        if await poll(published, deadline, 1.0) is None:
            raise StageFailed(f"tenant-root ingress is not published: {problem}")


PLATFORM_STAGES: tuple[Stage, ...] = (
    ApiReady(),
    Contract(),
    InstallerAssets(),
    HelmReleases(),
    Storage(),
    Virtualization(),
    Networking(),
    Tenants(),
)
