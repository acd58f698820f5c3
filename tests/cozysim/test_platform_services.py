"""Tenants through the aggregated API, and paas-full's nodes, storage, KubeVirt/CDI and MetalLB."""

from __future__ import annotations

import pytest
from cozysim_lab import PAAS, Lab, condition, is_ready, lab_cluster, wait_for
from lightkube import ApiError
from lightkube.types import PatchType

from provisioner.lab.kube.cozysim import kinds

TENANT_API = "apps.cozystack.io/v1alpha1"


def _tenant(name: str, namespace: str, **spec: object) -> dict:
    return {
        "apiVersion": TENANT_API,
        "kind": "Tenant",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _labels(lab: Lab, namespace: str) -> dict[str, str]:
    obj = lab.get(kinds.NAMESPACE, namespace) or {}
    return obj.get("metadata", {}).get("labels") or {}


def _hr_names(lab: Lab, namespace: str) -> set[str]:
    return {hr["metadata"]["name"] for hr in lab.list(kinds.HELMRELEASE, namespace)}


def test_seed_tenant_tree_labels_hosts_and_releases() -> None:
    with lab_cluster(delay=0.02) as lab:
        lab.install_v0({"bundle-name": "paas-hosted", **PAAS, "expose-external-ips": "10.0.0.12,10.0.0.11"})
        wait_for("the APIService", lambda: lab.get(kinds.APISERVICE, "v1alpha1.apps.cozystack.io"), lab, 90)
        wait_for("Tenant root", lambda: lab.get(kinds.TENANT, "root", "tenant-root"), lab)
        lab.merge(
            kinds.TENANT, "root", {"spec": {"etcd": True, "ingress": True, "monitoring": True}}, "tenant-root"
        )
        lab.apply(kinds.TENANT, _tenant("foo", "tenant-root", monitoring=True))
        wait_for("namespace tenant-foo", lambda: lab.get(kinds.NAMESPACE, "tenant-foo"), lab)
        lab.apply(kinds.TENANT, _tenant("bar", "tenant-foo", etcd=True))
        wait_for("namespace tenant-foo-bar", lambda: lab.get(kinds.NAMESPACE, "tenant-foo-bar"), lab)

        bar = _labels(lab, "tenant-foo-bar")
        assert bar["namespace.cozystack.io/etcd"] == "tenant-foo-bar"
        assert bar["namespace.cozystack.io/monitoring"] == "tenant-foo"
        assert bar["namespace.cozystack.io/ingress"] == "tenant-root"
        assert bar["namespace.cozystack.io/host"] == "bar.foo.example.org"
        foo = _labels(lab, "tenant-foo")
        assert foo["namespace.cozystack.io/host"] == "foo.example.org"
        assert foo["namespace.cozystack.io/monitoring"] == "tenant-foo"
        assert foo["namespace.cozystack.io/etcd"] == "tenant-root"
        assert {"tenant.cozystack.io/tenant-root", "tenant.cozystack.io/tenant-foo"} <= set(bar)

        assert "tenant-foo" in _hr_names(lab, "tenant-root")
        assert "tenant-bar" in _hr_names(lab, "tenant-foo")
        wait_for(
            "root's services",
            lambda: {"etcd", "ingress", "monitoring", "info"} <= _hr_names(lab, "tenant-root"),
            lab,
        )
        wait_for(
            "foo's services",
            lambda: _hr_names(lab, "tenant-foo") >= {"monitoring", "info", "tenant-bar"},
            lab,
        )
        wait_for("bar's services", lambda: _hr_names(lab, "tenant-foo-bar") == {"etcd", "info"}, lab)
        status = wait_for(
            "Tenant bar status",
            lambda: (
                (t := lab.get(kinds.TENANT, "bar", "tenant-foo"))
                and condition(t).get("status") == "True"
                and t
            ),
            lab,
        )
        assert status["status"]["namespace"] == "tenant-foo-bar"

        ingress = wait_for(
            "root's ingress Service",
            lambda: lab.get(kinds.SERVICE, "root-ingress-controller", "tenant-root"),
            lab,
        )
        assert ingress["spec"]["type"] == "ClusterIP"
        assert ingress["spec"]["externalIPs"] == ["10.0.0.11", "10.0.0.12"]

        with pytest.raises(ApiError) as refused:
            lab.apply(kinds.TENANT, _tenant("foo-bar", "tenant-root"))
        assert refused.value.status.code == 422

        lab.delete(kinds.TENANT, "bar", "tenant-foo")
        wait_for(
            "tenant bar's release and namespace to go",
            lambda: (
                "tenant-bar" not in _hr_names(lab, "tenant-foo")
                # one read: the namespace may go between two
                and (
                    (ns := lab.get(kinds.NAMESPACE, "tenant-foo-bar")) is None
                    or ns["metadata"].get("deletionTimestamp")
                )
            ),
            lab,
        )


def _node(name: str, disks: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name},
            "annotations": {"lab.provisioner/disks": disks},
        },
    }


def test_paas_full_nodes_storage_virtualization_and_load_balancer() -> None:
    with lab_cluster(delay=0.02, faults="stuck=cilium") as lab:
        for name, disks in (("n1", "/dev/sda,/dev/sdb"), ("n2", "/dev/sda,/dev/sdb"), ("n3", "/dev/sda")):
            lab.apply(kinds.NODE, _node(name, disks))
        # a Node a kubelet reports (the lab's kubelet stand-in): its Ready condition is the kubelet's alone
        lab.apply(kinds.NODE, _node("k1", "/dev/vdb"))
        info = dict.fromkeys(
            ("architecture", "bootID", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion"), "x"
        )
        info.update(dict.fromkeys(("machineID", "operatingSystem", "osImage", "systemUUID"), "x"))
        kubelet_status = {"status": {"nodeInfo": {**info, "kubeletVersion": "v1.34.1"}}}
        lab.client.patch(kinds.NODE.status, "k1", kubelet_status, patch_type=PatchType.MERGE)
        lab.install_v0({"bundle-name": "paas-full", **PAAS})
        wait_for(
            "cilium to be stuck",
            lambda: (
                condition(lab.get(kinds.HELMRELEASE, "cilium", "cozy-cilium")).get("reason")
                == "RetriesExceeded"
            ),
            lab,
        )
        not_ready = wait_for(
            "Nodes NotReady while the CNI is not",
            lambda: (
                (n := lab.get(kinds.NODE, "n1"))
                and condition(n).get("reason") == "NetworkPluginNotReady"
                and n
            ),
            lab,
        )
        assert condition(not_ready)["status"] == "False"
        assert lab.get(kinds.CRD, "kubevirts.kubevirt.io") is None, "nothing past the CNI installs"

        lab.merge(
            kinds.HELMRELEASE,
            "cilium",
            {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "go"}}},
            "cozy-cilium",
        )
        wait_for(
            "every Node without a kubelet Ready",
            lambda: all(
                condition(n).get("status") == "True"
                for n in lab.list(kinds.NODE)
                if n["metadata"]["name"] != "k1"
            ),
            lab,
        )
        wait_for(
            "every HelmRelease Ready",
            lambda: (hrs := lab.list(kinds.HELMRELEASE)) and len(hrs) >= 77 and all(is_ready(h) for h in hrs),
            lab,
            120,
        )
        assert condition(lab.get(kinds.NODE, "k1")) == {}, "the simulator wrote a kubelet's Ready condition"

        kubevirt = wait_for(
            "KubeVirt Deployed",
            lambda: (
                (kv := lab.get(kinds.KUBEVIRT, "kubevirt", "cozy-kubevirt"))
                and kv.get("status", {}).get("phase") == "Deployed"
                and kv
            ),
            lab,
        )
        conds = {c["type"]: c["status"] for c in kubevirt["status"]["conditions"]}
        assert (conds["Available"], conds["Progressing"], conds["Degraded"]) == ("True", "False", "False")
        assert kubevirt["status"]["observedGeneration"] == kubevirt["metadata"]["generation"]
        wait_for(
            "CDI Deployed",
            lambda: (lab.get(kinds.CDI, "cdi") or {}).get("status", {}).get("phase") == "Deployed",
            lab,
        )
        lab.merge(
            kinds.KUBEVIRT,
            "kubevirt",
            {"metadata": {"annotations": {"lab.provisioner/degraded": "virt-handler down"}}},
            "cozy-kubevirt",
        )
        degraded = wait_for(
            "KubeVirt Degraded by the fault",
            lambda: (
                (kv := lab.get(kinds.KUBEVIRT, "kubevirt", "cozy-kubevirt"))
                and condition(kv, "Degraded").get("status") == "True"
                and kv
            ),
            lab,
        )
        assert degraded["status"]["phase"] == "Deployed"

        lab.apply(
            kinds.LINSTORSATELLITECONFIG,
            {
                "apiVersion": "piraeus.io/v1",
                "kind": "LinstorSatelliteConfiguration",
                "metadata": {"name": "lab-storage"},
                "spec": {
                    "storagePools": [
                        {
                            "name": "data",
                            "zfsPool": {"zPool": "data"},
                            "source": {"hostDevices": ["/dev/sdb"]},
                        }
                    ]
                },
            },
        )
        good = wait_for(
            "satellite n1 configured",
            lambda: (
                (s := lab.get(kinds.LINSTORSATELLITE, "n1"))
                and "data (" in condition(s, "Configured").get("message", "")
                and s
            ),
            lab,
        )
        assert condition(good, "Configured")["status"] == "True"
        assert "data (ZFS on /dev/sdb)" in condition(good, "Configured")["message"]
        assert good["status"]["storageProviders"] == ["ZFS"]
        bad = wait_for(
            "satellite n3 to fail",
            lambda: (
                (s := lab.get(kinds.LINSTORSATELLITE, "n3"))
                and condition(s, "Configured").get("status") == "False"
                and s
            ),
            lab,
        )
        assert "/dev/sdb does not exist" in condition(bad, "Configured")["message"]
        lsc = wait_for(
            "the configuration's status",
            lambda: (
                (c := lab.get(kinds.LINSTORSATELLITECONFIG, "lab-storage"))
                and c.get("status", {}).get("matched") == 4
                and c
            ),
            lab,
        )
        assert lsc["status"]["appliedTo"] == ["k1", "n1", "n2", "n3"]

        wait_for("MetalLB CRDs", lambda: lab.get(kinds.CRD, "ipaddresspools.metallb.io"), lab)
        lab.apply(
            kinds.IPADDRESSPOOL,
            {
                "apiVersion": "metallb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": "cozystack", "namespace": "cozy-metallb"},
                "spec": {"addresses": ["192.168.100.200-192.168.100.250"], "autoAssign": True},
            },
        )
        wait_for("Tenant root", lambda: lab.get(kinds.TENANT, "root", "tenant-root"), lab)
        lab.merge(kinds.TENANT, "root", {"spec": {"ingress": True}}, "tenant-root")
        service = wait_for(
            "the ingress Service address",
            lambda: (
                (s := lab.get(kinds.SERVICE, "root-ingress-controller", "tenant-root"))
                and s.get("status", {}).get("loadBalancer", {}).get("ingress")
                and s
            ),
            lab,
        )
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["status"]["loadBalancer"]["ingress"] == [{"ip": "192.168.100.200"}]
