"""What the platform's components do once their HelmReleases are Ready: Node readiness behind the
CNI, LINSTOR satellites, the KubeVirt and CDI custom resources, MetalLB's CRDs and the ingress address.

The rules are in ``storage``, ``virt`` and ``network``; this module only reads the caches and writes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from provisioner.lab.kube.cozysim import helmrelease as hrm
from provisioner.lab.kube.cozysim import kinds, network, platform, storage, tenancy, upstream, virt

if TYPE_CHECKING:
    from provisioner.lab.kube.cozysim.controller import Simulator


async def reconcile_nodes(sim: Simulator, rendered: platform.Platform) -> None:
    """Node Ready follows the CNI releases (bundles without a CNI leave Nodes alone).

    A Node whose status carries ``nodeInfo.kubeletVersion`` has a kubelet (the lab's kubelet stand-in)
    reporting its own Ready condition, as real kubelets do: the simulator leaves it alone, so the
    condition has one owner. On the host there is no kubelet and the simulator plays that part.
    """
    if not rendered.cni:
        return
    cni_ready = all(sim.ready(r.name, r.namespace) for r in rendered.cni)
    stamp = kinds.now_text()
    for node in sim.inf["node"].values():
        if ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion"):
            continue
        status = dict(node.get("status") or {})
        conds = list(status.get("conditions") or [])
        previous = next((c for c in conds if c.get("type") == "Ready"), None)
        wanted = network.node_ready_condition(cni_ready, previous, stamp)
        if previous and all(previous.get(k) == wanted[k] for k in ("status", "reason")):
            continue
        status["conditions"] = [c for c in conds if c.get("type") != "Ready"] + [wanted]
        node = {**node, "status": status}
        result = await sim.client.replace(kinds.NODE.status.from_dict(node))
        sim.inf["node"].store(kinds.as_dict(result))


# ------------------------------------------------------------- components
async def reconcile_components(sim: Simulator, rendered: platform.Platform) -> None:
    if sim.release_ready(rendered, "metallb"):
        await sim.ensure_crds(upstream.METALLB_CRDS)
    if sim.release_ready(rendered, "piraeus-operator"):
        await sim.ensure_crds(upstream.PIRAEUS_CRDS)
    if sim.release_ready(rendered, "linstor") and sim.inf["lcl"].served:
        await _storage(sim)
    if sim.release_ready(rendered, "kubevirt-operator"):
        await sim.ensure_crds(upstream.KUBEVIRT_CRDS)
    if sim.release_ready(rendered, "kubevirt") and sim.inf["kv"].served:
        manifest = virt.kubevirt_manifest()
        current = sim.inf["kv"].get("kubevirt", "cozy-kubevirt")
        await sim.ensure(kinds.KUBEVIRT, manifest, current)
        current = sim.inf["kv"].get("kubevirt", "cozy-kubevirt")
        if current is not None:
            await sim.apply_status(kinds.KUBEVIRT, current, virt.kubevirt_status(current, kinds.now_text()))
    if sim.release_ready(rendered, "kubevirt-cdi-operator"):
        await sim.ensure_crds(upstream.CDI_CRDS)
    if sim.release_ready(rendered, "kubevirt-cdi") and sim.inf["cdi"].served:
        current = sim.inf["cdi"].get("cdi")
        status = virt.cdi_status(current or {}, kinds.now_text())
        if current is None or (current.get("status") or {}) != status:
            await sim.apply(kinds.CDI, {**virt.cdi_manifest(), "status": status})
    await _ingress(sim, rendered)


async def _storage(sim: Simulator) -> None:
    cluster = {"metadata": {"name": "linstorcluster"}, "spec": {}}
    await sim.ensure(kinds.LINSTORCLUSTER, cluster, sim.inf["lcl"].get("linstorcluster"))
    if not (sim.inf["sat"].served and sim.inf["lsc"].served):
        return
    configs = sim.inf["lsc"].values()
    applied_to: dict[str, list[str]] = {(kinds.meta(c).get("name") or ""): [] for c in configs}
    stamp = kinds.now_text()
    for node in sim.inf["node"].values():
        sat = storage.satellite(node, configs)
        for name in sat.configurations:
            applied_to[name].append(sat.name)
        body = {"metadata": {"name": sat.name}, "spec": sat.spec}
        current = sim.inf["sat"].get(sat.name)
        if current is None or (current.get("spec") or {}) != sat.spec:
            current = await sim.apply(kinds.LINSTORSATELLITE, body)
        generation = int(kinds.meta(current).get("generation") or 1)
        previous = (current.get("status") or {}).get("conditions") or ()
        status = {
            "conditions": storage.satellite_conditions(sat, generation, stamp, previous),
            "storageProviders": list(sat.providers),
        }
        await sim.apply_status(kinds.LINSTORSATELLITE, current, status)
    for config in configs:
        name = kinds.meta(config).get("name") or ""
        generation = int(kinds.meta(config).get("generation") or 1)
        lsc_status = copy.deepcopy(config.get("status") or {})
        hrm.set_condition(lsc_status, "Applied", "True", "AsExpected", "Resources applied", generation, stamp)
        lsc_status["matched"] = len(applied_to[name])
        lsc_status["appliedTo"] = sorted(applied_to[name])
        await sim.apply_status(kinds.LINSTORSATELLITECONFIG, config, lsc_status)


async def _ingress(sim: Simulator, rendered: platform.Platform) -> None:
    root_tenant = sim.inf["tenant"].get("root", tenancy.ROOT_NAMESPACE)
    if not root_tenant or (root_tenant.get("spec") or {}).get("ingress") is not True:
        return
    if not sim.ready("ingress", tenancy.ROOT_NAMESPACE):
        return
    external = rendered.external_ips if rendered.expose_ingress == tenancy.ROOT_NAMESPACE else ()
    body = network.ingress_service(tenancy.ROOT_NAMESPACE, external)
    current = sim.inf["svc"].get(network.INGRESS_SERVICE, tenancy.ROOT_NAMESPACE)
    await sim.ensure(kinds.SERVICE, body, current)
    current = sim.inf["svc"].get(network.INGRESS_SERVICE, tenancy.ROOT_NAMESPACE)
    if current is None or external or not sim.inf["pool"].served:
        return
    ingress = ((current.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        return
    pool = network.first_pool(sim.inf["pool"].values())
    if pool is None:
        return
    in_use = {
        entry.get("ip")
        for svc in sim.inf["svc"].values()
        for entry in (((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ())
    }
    address = network.allocate(pool, {a for a in in_use if a})
    if address:
        await sim.apply_status(kinds.SERVICE, current, {"loadBalancer": {"ingress": [{"ip": address}]}})
