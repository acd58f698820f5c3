"""The installer (v0) and the operator (v1): render the platform and write its objects.

v0 (``notes/platform-install.md`` §1.3-1.5): with Namespace ``cozy-system``, ConfigMap ``cozystack``
and the installer Deployment present, render the bundle (``platform.render_v0``); a configuration that
cannot render is refused visibly (a ``RenderFailed`` Warning Event and the Deployment's
``Available=False RenderFailed`` condition, see the package docstring) before Flux is installed, as
installer.sh renders before it installs Flux. v1 (§7): the operator Deployment brings the Flux,
Package and PackageSource CRDs; the Package ``cozystack.cozystack-platform`` renders, and turns Ready
once its HelmReleases exist.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from lightkube import ApiError

from provisioner.lab.kube.cozysim import helmrelease as hrm
from provisioner.lab.kube.cozysim import kinds, platform, tenancy, upstream

if TYPE_CHECKING:
    from provisioner.lab.kube.cozysim.controller import Simulator

log = logging.getLogger("cozysim")

SYSTEM_NS = "cozy-system"
INSTALLER = "cozystack"
OPERATOR = "cozystack-operator"
PACKAGE = "cozystack.cozystack-platform"


async def render_and_apply(sim: Simulator) -> platform.Platform | None:
    """Render from the v1 Package (operator present) or the v0 ConfigMap (installer present)."""
    operator = sim.inf["deploy"].get(OPERATOR, SYSTEM_NS)
    installer = sim.inf["deploy"].get(INSTALLER, SYSTEM_NS)
    if operator is None and installer is None:
        return None
    if operator is not None:
        await sim.ensure_crds(upstream.FLUX_CRDS)  # the operator installs CRDs and Flux first
        await sim.ensure_crds(upstream.PACKAGE_CRDS)
        await _deployment_status(sim, operator, None)
        if not sim.inf["pkg"].served:
            return None
        await _package_source(sim)
        package = sim.inf["pkg"].get(PACKAGE)
        if package is None:
            return None
        try:
            rendered = platform.render_v1(package)
        except platform.RenderError as exc:
            reason, _, message = str(exc).partition(": ")
            await _package_status(sim, package, "False", reason, message)
            return None
        created = await _apply_platform(sim, rendered)
        if created:
            await _package_status(
                sim,
                package,
                "True",
                "ReconciliationSucceeded",
                f"reconciliation succeeded, generated {len(rendered.releases)} helmrelease(s)",
            )
        return rendered
    assert installer is not None
    config = sim.inf["cm"].get("cozystack", SYSTEM_NS)
    try:
        if config is None:
            raise platform.RenderError("ERROR ConfigMap cozy-system/cozystack not found")
        rendered = platform.render_v0(config.get("data") or {})
    except platform.RenderError as exc:
        await _render_event(sim, str(exc))
        await _deployment_status(sim, installer, str(exc))
        return None
    # installer.sh renders the platform (namespaces-apply) before it installs Flux, so a
    # configuration that cannot render leaves no Flux CRDs behind either.
    await _deployment_status(sim, installer, None)
    await sim.ensure_crds(upstream.FLUX_CRDS)
    await _apply_platform(sim, rendered)
    return rendered


async def _deployment_status(sim: Simulator, deploy: dict[str, Any], failure: str | None) -> None:
    """The installer/operator Deployment's status: Available, or the render failure (module contract)."""
    previous = {c.get("type"): c for c in (deploy.get("status") or {}).get("conditions") or ()}
    stamp = kinds.now_text()
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
        "observedGeneration": int(kinds.meta(deploy).get("generation") or 1),
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
        await sim.apply_status(kinds.DEPLOYMENT, deploy, status)


async def _render_event(sim: Simulator, message: str) -> None:
    """A Warning Event ``RenderFailed`` on the installer Deployment, once per distinct message."""
    digest = hashlib.sha256(message.encode()).hexdigest()[:10]
    stamp = kinds.now_text()
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
        await sim.client.create(kinds.EVENT.res.from_dict(body))
    except ApiError as exc:
        if exc.status.code != 409:
            raise


async def _package_source(sim: Simulator) -> None:
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
    if not sim.package_source_done:
        await sim.apply(kinds.PACKAGESOURCE, body)
        sim.package_source_done = True


async def _package_status(
    sim: Simulator, package: dict[str, Any], value: str, reason: str, message: str
) -> None:
    status = copy.deepcopy(package.get("status") or {})
    generation = int(kinds.meta(package).get("generation") or 1)
    hrm.set_condition(status, "Ready", value, reason, message, generation, kinds.now_text())
    await sim.apply_status(kinds.PACKAGE, package, status)


async def _apply_platform(sim: Simulator, rendered: platform.Platform) -> bool:
    """Namespaces, HelmRepositories and HelmReleases; returns whether every HelmRelease exists."""
    root = tenancy.root(_root_host(sim, rendered))
    for name in rendered.namespaces:
        labels = {"cozystack.io/system": "true"}
        if name == SYSTEM_NS:
            labels["pod-security.kubernetes.io/enforce"] = "privileged"
        if name == tenancy.ROOT_NAMESPACE:
            labels = root.labels()
        body = {"metadata": {"name": name, "labels": labels}}
        await sim.ensure(kinds.NAMESPACE, body, sim.inf["ns"].get(name))
    if not sim.inf["hr"].served:
        return False
    for ns, name in (platform.SYSTEM_REPO, platform.APPS_REPO, ("cozy-public", "cozystack-extra")):
        if f"repo:{ns}/{name}" in sim.applied_once:
            continue
        await sim.apply(
            kinds.HELMREPOSITORY,
            {
                "metadata": {"name": name, "namespace": ns},
                "spec": {"interval": "5m", "url": f"http://{name}"},
            },
        )
        sim.applied_once.add(f"repo:{ns}/{name}")
    wanted = set()
    writes = []
    for release in rendered.releases:
        wanted.add((release.namespace, release.name))
        body = platform.helmrelease_manifest(release)
        writes.append(sim.ensure(kinds.HELMRELEASE, body, sim.inf["hr"].get(release.name, release.namespace)))
    await sim.concurrently(writes)
    for hr in sim.inf["hr"].values():
        labels = kinds.meta(hr).get("labels") or {}
        if labels.get(platform.SYSTEM_APP_LABEL) == "true" and kinds.key(hr) not in wanted:
            log.info("release %s/%s no longer rendered: deleting", *kinds.key(hr))
            await sim.delete(kinds.HELMRELEASE, kinds.meta(hr)["name"], kinds.meta(hr)["namespace"])
    return True


def _root_host(sim: Simulator, rendered: platform.Platform) -> str:
    root = sim.inf["tenant"].get("root", tenancy.ROOT_NAMESPACE)
    host = ((root or {}).get("spec") or {}).get("host")
    return str(host or rendered.root_host)
