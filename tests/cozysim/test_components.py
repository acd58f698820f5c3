"""Pure rules for LINSTOR satellites, KubeVirt/CDI status, MetalLB addresses and Node readiness."""

from __future__ import annotations

from provisioner.lab.kube.cozysim import network, storage, virt

NOW = "2026-12-01T22:00:00Z"


def _node(name: str, disks: str | None, **labels: str) -> dict:
    annotations = {storage.DISKS_ANNOTATION: disks} if disks is not None else {}
    return {
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **labels},
            "annotations": annotations,
        }
    }


def _lsc(name: str, pools: list, selector: dict | None = None) -> dict:
    spec: dict = {"storagePools": pools}
    if selector:
        spec["nodeSelector"] = selector
    return {"metadata": {"name": name}, "spec": spec}


DATA = {"name": "data", "zfsPool": {"zPool": "data"}, "source": {"hostDevices": ["/dev/sdb"]}}


def test_satellite_reports_its_pools_when_devices_exist() -> None:
    sat = storage.satellite(_node("n1", "/dev/sda,/dev/sdb"), [_lsc("pools", [DATA])])
    assert sat.configured == "True"
    assert sat.message == "Pools configured: data (ZFS on /dev/sdb)"
    assert sat.providers == ("ZFS",)
    assert sat.spec["storagePools"] == [DATA]


def test_missing_device_is_a_configured_false_error() -> None:
    sat = storage.satellite(_node("n1", "/dev/sda"), [_lsc("pools", [DATA])])
    assert sat.configured == "False"
    assert "device /dev/sdb does not exist" in sat.message
    conds = {c["type"]: c for c in storage.satellite_conditions(sat, 1, NOW, [])}
    assert conds["Configured"]["reason"] == "Error"
    assert conds["Available"]["status"] == "True"


def test_node_without_a_device_report_is_unknown() -> None:
    sat = storage.satellite(_node("n1", None), [_lsc("pools", [DATA])])
    assert sat.configured == "Unknown"
    assert storage.DISKS_ANNOTATION in sat.message


def test_configurations_merge_by_name_later_wins_and_respect_selectors() -> None:
    lvm = {"name": "data", "lvmPool": {"volumeGroup": "data"}, "source": {"hostDevices": ["/dev/sdc"]}}
    configs = [_lsc("b-override", [lvm], {"kubernetes.io/hostname": "n2"}), _lsc("a-base", [DATA])]
    on_n1 = storage.satellite(_node("n1", "/dev/sdb"), configs)
    on_n2 = storage.satellite(_node("n2", "/dev/sdc"), configs)
    assert on_n1.configurations == ("a-base",)
    assert on_n2.configurations == ("a-base", "b-override")
    assert on_n2.spec["storagePools"] == [lvm]
    assert on_n2.configured == "True"


def test_kubevirt_deployed_and_degraded_by_fault_keeps_phase() -> None:
    cr = {**virt.kubevirt_manifest(), "metadata": {"name": "kubevirt", "generation": 3}}
    status = virt.kubevirt_status(cr, NOW)
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert status["phase"] == "Deployed" and status["observedGeneration"] == 3
    assert conds == {"Available": "True", "Progressing": "False", "Degraded": "False", "Created": "True"}
    cr["metadata"]["annotations"] = {virt.DEGRADED_ANNOTATION: "virt-handler not ready"}
    degraded = virt.kubevirt_status({**cr, "status": status}, "later")
    conds2 = {c["type"]: c for c in degraded["conditions"]}
    assert degraded["phase"] == "Deployed"
    assert conds2["Degraded"]["status"] == "True"
    assert conds2["Degraded"]["message"] == "virt-handler not ready"
    assert conds2["Available"]["lastTransitionTime"] == NOW, "unchanged conditions keep their time"


def test_cdi_deployed_and_degraded() -> None:
    cr = virt.cdi_manifest()
    assert "namespace" not in cr["metadata"]
    status = virt.cdi_status(cr, NOW)
    assert status["phase"] == "Deployed"
    assert status["observedVersion"] == status["operatorVersion"]
    cr["metadata"]["annotations"] = {virt.DEGRADED_ANNOTATION: ""}
    conds = {c["type"]: c["status"] for c in virt.cdi_status(cr, NOW)["conditions"]}
    assert conds["Degraded"] == "True" and conds["Available"] == "True"


def test_first_pool_and_first_free_address() -> None:
    older = {
        "metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"addresses": ["192.168.100.200-192.168.100.202"]},
    }
    newer = {
        "metadata": {"name": "a", "creationTimestamp": "2026-02-01T00:00:00Z"},
        "spec": {"addresses": ["10.0.0.0/30"]},
    }
    manual = {
        "metadata": {"name": "0", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"addresses": ["10.9.9.9/32"], "autoAssign": False},
    }
    pool = network.first_pool([newer, manual, older])
    assert pool is older
    assert network.allocate(older, set()) == "192.168.100.200"
    assert network.allocate(older, {"192.168.100.200"}) == "192.168.100.201"
    assert network.allocate(older, {"192.168.100.200", "192.168.100.201", "192.168.100.202"}) is None
    assert network.allocate(newer, set()) == "10.0.0.1"


def test_ingress_service_with_external_ips_or_load_balancer() -> None:
    lb = network.ingress_service("tenant-root", ())
    assert lb["metadata"]["name"] == "root-ingress-controller"
    assert lb["spec"]["type"] == "LoadBalancer" and lb["spec"]["externalTrafficPolicy"] == "Local"
    ext = network.ingress_service("tenant-root", ("10.0.0.11", "10.0.0.12"))
    assert ext["spec"]["type"] == "ClusterIP"
    assert ext["spec"]["externalIPs"] == ["10.0.0.11", "10.0.0.12"]


def test_node_ready_follows_the_cni() -> None:
    waiting = network.node_ready_condition(False, None, NOW)
    assert (waiting["status"], waiting["reason"]) == ("False", "NetworkPluginNotReady")
    ready = network.node_ready_condition(True, waiting, "later")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert ready["lastTransitionTime"] == "later"
    assert network.node_ready_condition(True, ready, "even-later")["lastTransitionTime"] == "later"


def test_pool_entries_metallb_would_refuse_are_skipped() -> None:
    pool = {"spec": {"addresses": ["10.0.0.1-fd00::1", "not-an-address", "10.0.0.5/32"]}}
    assert network.allocate(pool, set()) == "10.0.0.5"
    assert network.allocate({"spec": {"addresses": ["fd00::/126"]}}, {"fd00::1"}) == "fd00::2"


def test_lease_expiry_rule() -> None:
    import datetime as dt

    from provisioner.lab.kube.cozysim.leader import expired

    now = dt.datetime(2026, 12, 1, 22, 0, 10, tzinfo=dt.UTC)
    spec = {"holderIdentity": "cp1", "renewTime": "2026-12-01T22:00:00.000000Z", "leaseDurationSeconds": 15}
    assert not expired(spec, now)
    assert expired({**spec, "leaseDurationSeconds": 5}, now)
    assert expired({**spec, "holderIdentity": ""}, now), "a released lease is free at once"
    assert expired({"holderIdentity": "cp1"}, now), "a lease that was never renewed protects nobody"


def test_a_leader_that_cannot_renew_stands_down() -> None:
    from provisioner.lab.kube.cozysim.leader import LeaderElector

    elector = LeaderElector(None, "cp1", duration=3)  # type: ignore[arg-type]  # no API call is made
    elector._set(True)
    elector.check_deadline()
    assert elector.is_leader, "renewed just now"
    elector.renewed_at -= 2.5  # more than 2/3 of the 3 s lease without a renewal
    elector.check_deadline()
    assert not elector.is_leader
