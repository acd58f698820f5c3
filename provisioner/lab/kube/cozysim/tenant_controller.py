"""The aggregated Tenant API's side effects: APIService and Tenant root, then per Tenant its
HelmRelease, namespace (labels from ``tenancy``), service releases and status; a deleted Tenant takes
its release and namespace with it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lightkube import ApiError

from provisioner.lab.kube.cozysim import helmrelease as hrm
from provisioner.lab.kube.cozysim import kinds, platform, tenancy

if TYPE_CHECKING:
    from provisioner.lab.kube.cozysim.controller import Simulator

log = logging.getLogger("cozysim")

SYSTEM_NS = "cozy-system"
TENANT_SERVICE_LABEL = "lab.provisioner/tenant-service"
TENANT_OWNER_LABEL = "lab.provisioner/tenant"
APISERVICE = "v1alpha1.apps.cozystack.io"


async def reconcile_tenants(sim: Simulator, rendered: platform.Platform) -> None:
    if not (sim.release_ready(rendered, "cozystack-api") and sim.ready("tenant-root", "tenant-root")):
        return
    if sim.inf["apisvc"].get(APISERVICE) is None:
        await sim.apply(
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
        sim.inf["tenant"].poke()
    cache = sim.inf["tenant"]
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
            cache.store(kinds.as_dict(await sim.client.create(kinds.TENANT.res.from_dict(body))))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
    live: set[tuple[str, str]] = set()
    for tenant in cache.values():
        await _tenant(sim, tenant, live)
    await _forget_tenants(sim, live)


async def _tenant(sim: Simulator, tenant: dict[str, Any], live: set[tuple[str, str]]) -> None:
    meta = kinds.meta(tenant)
    parent_ns, name = meta.get("namespace", ""), meta.get("name", "")
    spec = tenant.get("spec") or {}
    if parent_ns == tenancy.ROOT_NAMESPACE and name == "root":
        await _tenant_services(sim, tenancy.ROOT_NAMESPACE, spec, f"{parent_ns}/{name}")
        hr = sim.inf["hr"].get("tenant-root", tenancy.ROOT_NAMESPACE)
        await _tenant_status(sim, tenant, tenancy.ROOT_NAMESPACE, hr)
        return
    parent_obj = sim.inf["ns"].get(parent_ns)
    parent = tenancy.TenantNamespace.from_labels(
        parent_ns, (kinds.meta(parent_obj or {}).get("labels") or {})
    )
    if parent is None:
        await _tenant_status(sim, tenant, "", None, f"namespace {parent_ns} is not a tenant namespace")
        return
    try:
        resolved = tenancy.child(parent, name, spec)
    except tenancy.TenantError as exc:
        await _tenant_status(sim, tenant, "", None, str(exc))
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
    await sim.ensure(kinds.HELMRELEASE, body, sim.inf["hr"].get(release.name, parent_ns))
    hr = sim.inf["hr"].get(release.name, parent_ns)
    if hrm.is_ready(hr):
        ns_body = {"metadata": {"name": resolved.name, "labels": resolved.labels()}}
        await sim.ensure(kinds.NAMESPACE, ns_body, sim.inf["ns"].get(resolved.name))
        live.add((resolved.name, ""))
        await _tenant_services(sim, resolved.name, spec, f"{parent_ns}.{name}")
    elif sim.inf["ns"].get(resolved.name) is not None:
        live.add((resolved.name, ""))
    await _tenant_status(sim, tenant, resolved.name, hr)


async def _tenant_services(sim: Simulator, namespace: str, spec: dict[str, Any], owner: str) -> None:
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
        await sim.ensure(kinds.HELMRELEASE, body, sim.inf["hr"].get(service, namespace))
    for hr in [h for h in sim.inf["hr"].values() if kinds.meta(h).get("namespace") == namespace]:
        rendered_for = (kinds.meta(hr).get("labels") or {}).get(TENANT_SERVICE_LABEL)
        if rendered_for and rendered_for not in wanted:
            await sim.delete(kinds.HELMRELEASE, kinds.meta(hr)["name"], namespace)


async def _tenant_status(
    sim: Simulator,
    tenant: dict[str, Any],
    namespace: str,
    hr: dict[str, Any] | None,
    problem: str | None = None,
) -> None:
    """Tenant status as cozystack-api shows it: the HelmRelease's Ready/Released conditions, namespace."""
    status: dict[str, Any] = {}
    if namespace:
        status["namespace"] = namespace
    generation = int(kinds.meta(tenant).get("generation") or 1)
    if problem:
        status["conditions"] = []
        hrm.set_condition(status, "Ready", "False", "InvalidTenant", problem, generation, kinds.now_text())
    else:
        hr_status = (hr or {}).get("status") or {}
        status["conditions"] = [
            c for c in hr_status.get("conditions") or () if c.get("type") in ("Ready", "Released")
        ]
        if hr_status.get("lastAttemptedRevision"):
            status["version"] = hr_status["lastAttemptedRevision"]
    await sim.apply_status(kinds.TENANT, tenant, status)


async def _forget_tenants(sim: Simulator, live: set[tuple[str, str]]) -> None:
    """A deleted Tenant takes its HelmRelease and namespace with it (helm uninstall upstream)."""
    for hr in list(sim.inf["hr"].values()):
        labels = kinds.meta(hr).get("labels") or {}
        if TENANT_OWNER_LABEL in labels and TENANT_SERVICE_LABEL not in labels and kinds.key(hr) not in live:
            meta = kinds.meta(hr)
            log.info("tenant of %s/%s is gone: deleting", meta["namespace"], meta["name"])
            await sim.delete(kinds.HELMRELEASE, meta["name"], meta["namespace"])
            parent, _, name = labels[TENANT_OWNER_LABEL].partition(".")
            child = f"tenant-{name}" if parent == tenancy.ROOT_NAMESPACE else f"{parent}-{name}"
            if sim.inf["ns"].get(child) is not None and (child, "") not in live:
                await sim.delete(kinds.NAMESPACE, child)
