"""The lab side of the stand-in, on the host: VIP election over a real etcd, the kubelet stand-in
(bootstrap-token auth, Node registration, Lease renewal, Ready behind the CNI release), and the
machine-config parsing they start from."""

from __future__ import annotations

import base64
import time

import yaml
from kube_helpers import Raw

from provisioner.lab.kube import nodeagent
from provisioner.lab.kube.host import KubePaths, running
from provisioner.lab.kube.nodeagent import KubeletStandin, VipElection, parse_kube_config

TOKEN = "abcdef.0123456789abcdef"


def wait_until(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def machine_config(ca: bytes, key: bytes | None, mtype: str = "controlplane") -> bytes:
    doc = {
        "version": "v1alpha1",
        "machine": {
            "type": mtype,
            "token": "trustd",
            "nodeLabels": {"topology.kubernetes.io/zone": "r1"},
            "kubelet": {"image": "ghcr.io/siderolabs/kubelet:v1.33.2"},
            "network": {"hostname": "cp1", "interfaces": [{"interface": "eth0", "vip": {"ip": "10.0.0.10"}}]},
        },
        "cluster": {
            "clusterName": "lab",
            "controlPlane": {"endpoint": "https://10.0.0.10:6443"},
            "network": {"dnsDomain": "cluster.local"},
            "token": TOKEN,
            "ca": {
                "crt": base64.b64encode(ca).decode(),
                **({"key": base64.b64encode(key).decode()} if key else {}),
            },
        },
    }
    return yaml.safe_dump(doc).encode()


def test_parse_kube_config() -> None:
    k = parse_kube_config(machine_config(b"CA", b"KEY"), "fallback")
    assert k is not None and k.control_plane and k.hostname == "cp1" and k.vip == "10.0.0.10"
    assert (k.kubernetes_version, k.bootstrap_token, k.endpoint_port) == ("v1.33.2", TOKEN, 6443)
    assert k.node_labels == {"topology.kubernetes.io/zone": "r1"} and k.ca_key == b"KEY"
    worker = parse_kube_config(machine_config(b"CA", None, "worker"), "w")
    assert worker is not None and not worker.control_plane and worker.ca_key is None
    assert parse_kube_config(b"version: v1alpha1\nmachine: {type: worker}\n", "x") is None


def test_vip_moves_when_the_holder_stops_renewing() -> None:
    with running(simulator=False) as host:
        held: dict[str, bool] = {"a": False, "b": False}

        def election(name: str) -> VipElection:
            return VipElection(
                host.etcd,
                "10.0.0.10",
                name,
                claim=lambda: held.__setitem__(name, True),
                release=lambda: held.__setitem__(name, False),
                ttl=2,
                interval=0.2,
            )

        a, b = election("a"), election("b")
        a.step()
        b.step()
        assert held == {"a": True, "b": False}
        for _ in range(5):  # renewals keep it where it is
            a.step()
            b.step()
            time.sleep(0.2)
        assert held == {"a": True, "b": False}
        # "a" dies without a word: its lease expires, "b" takes the VIP within ttl + interval
        started = time.monotonic()
        b.start()
        wait_until(lambda: held["b"], 6, "b to take the VIP")
        assert time.monotonic() - started < 4
        b.stop()
        assert held["b"] is False, "stop() must release the VIP"


def test_kubelet_registers_node_renews_lease_and_follows_the_cni() -> None:
    with running(simulator=False, token=TOKEN) as host:
        pki = KubePaths(host.root).pki
        raw = Raw(host)
        port = int(host.server.rsplit(":", 1)[1])
        k = parse_kube_config(machine_config((pki / "ca.crt").read_bytes(), None, "worker"), "w1")
        assert k is not None
        kubelet = KubeletStandin(k, "10.0.0.21", "127.0.0.1", port)
        kubelet.sync()
        _, _, node = raw.request("GET", "/api/v1/nodes/cp1")
        labels = node["metadata"]["labels"]
        assert labels["topology.kubernetes.io/zone"] == "r1" and labels["kubernetes.io/hostname"] == "cp1"
        assert "node-role.kubernetes.io/control-plane" not in labels
        assert {"type": "InternalIP", "address": "10.0.0.21"} in node["status"]["addresses"]
        disks = node["metadata"]["annotations"]["lab.provisioner/disks"]  # what the simulator checks
        assert disks == ",".join(nodeagent.block_devices())
        assert int(node["status"]["capacity"]["cpu"]) >= 1 and node["status"]["capacity"]["memory"].endswith(
            "Ki"
        )
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "NetworkPluginNotReady")
        _, _, lease = raw.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/cp1")
        first_renew = lease["spec"]["renewTime"]
        # the CNI release appears and goes Ready: the next sync reports Ready=True
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "helmreleases.helm.toolkit.fluxcd.io"},
            "spec": {
                "group": "helm.toolkit.fluxcd.io",
                "scope": "Namespaced",
                "names": {"plural": "helmreleases", "kind": "HelmRelease"},
                "versions": [{"name": "v2", "served": True, "storage": True, "subresources": {"status": {}}}],
            },
        }
        assert raw.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
        assert raw.request("POST", "/api/v1/namespaces", {"metadata": {"name": "cozy-cilium"}})[0] == 201
        hr = {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "cilium"},
        }
        url = "/apis/helm.toolkit.fluxcd.io/v2/namespaces/cozy-cilium/helmreleases/cilium"
        assert raw.request("POST", url.rsplit("/", 1)[0], hr)[0] == 201
        kubelet.sync()
        _, _, node = raw.request("GET", "/api/v1/nodes/cp1")
        assert next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
        status = {
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "InstallSucceeded"}]}
        }
        assert raw.request("PATCH", url + "/status", status, "application/merge-patch+json")[0] == 200
        time.sleep(0.01)
        kubelet.sync()
        _, _, node = raw.request("GET", "/api/v1/nodes/cp1")
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
        _, _, lease = raw.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/cp1")
        assert lease["spec"]["renewTime"] > first_renew and lease["spec"]["holderIdentity"] == "cp1"
        # without the token (and without a certificate) the API refuses: 401 Status
        anonymous = KubeletStandin(k, "10.0.0.21", "127.0.0.1", port)
        object.__setattr__(anonymous.kcfg, "bootstrap_token", "wrong.token")
        code, doc = anonymous.request("GET", "/api/v1/nodes")
        assert code == 401 and doc["reason"] == "Unauthorized"
    assert nodeagent.CNI_RELEASES == ("cilium", "kubeovn")


def test_control_plane_serves_with_the_cluster_ca_and_the_admin_kubeconfig(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from provisioner.lab.kube.host import free_port
    from provisioner.lab.kube.pki import new_ca
    from provisioner.lab.standin.kubeconfig import admin_kubeconfig

    ca, key = new_ca("cluster-ca")
    k = parse_kube_config(machine_config(ca, key), "cp1")
    assert k is not None
    with running(simulator=False) as host:  # only its etcd is used: the control plane brings its own server
        port = free_port()
        cp = nodeagent.ControlPlaneKube(k, tmp_path, host.etcd, ["127.0.0.1"], port=port)
        cp.start()
        try:
            kubeconfig = tmp_path / "admin.yaml"
            kubeconfig.write_bytes(admin_kubeconfig("lab", f"https://127.0.0.1:{port}", ca, key))
            from kube_helpers import kubectl

            h = type("H", (), {"kubeconfig": kubeconfig})()
            wait_until(lambda: kubectl(h, "get", "--raw", "/version").returncode == 0, 20, "the API server")  # type: ignore[arg-type]
            assert "v1.33.2+provisioner-stand-in" in kubectl(h, "get", "--raw", "/version").stdout  # type: ignore[arg-type]
            from cryptography import x509

            cert = x509.load_pem_x509_certificate((tmp_path / "var/kube/server.crt").read_bytes())
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert {"kubernetes", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} <= set(
                sans.get_values_for_type(x509.DNSName)
            )
            assert {"10.0.0.10", "127.0.0.1"} <= {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
            for name in ("server.key", "tokens"):
                assert oct((tmp_path / "var/kube" / name).stat().st_mode & 0o777) == "0o600"
            kubelet = KubeletStandin(k, "127.0.0.1", "127.0.0.1", port)
            kubelet.sync()  # the bootstrap token from the machine config is accepted
            out = kubectl(h, "get", "nodes", "-o", "jsonpath={.items[*].metadata.labels}")  # type: ignore[arg-type]
            assert "node-role.kubernetes.io/control-plane" in out.stdout
            table = kubectl(h, "get", "nodes").stdout.split("\n")  # type: ignore[arg-type]
            assert table[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
            assert table[1].split()[:3] == ["cp1", "NotReady", "control-plane"] and "v1.33.2" in table[1]
        finally:
            cp.stop()


def test_block_devices_lists_whole_disks_from_sys_block(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ("vdb", "vda", "loop0", "ram1", "zram0", "sr0"):
        (tmp_path / name).mkdir()
    assert nodeagent.block_devices(tmp_path) == ["/dev/vda", "/dev/vdb"]
    assert nodeagent.block_devices(tmp_path / "missing") == []


def test_control_plane_runs_only_the_api_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The simulator (in-cluster controllers) runs beside the VMs, not in them: lab/controllers.py."""
    from provisioner.lab.kube.nodeagent import ControlPlaneKube

    with running(simulator=False) as host:
        pki = KubePaths(host.root).pki
        k = parse_kube_config(machine_config((pki / "ca.crt").read_bytes(), None), "cp1")
    assert k is not None
    cmds = ControlPlaneKube(k, tmp_path, "http://127.0.0.1:2379", ["10.0.0.11"])._commands()
    assert list(cmds) == ["apiserver"]
    assert cmds["apiserver"][1:4] == ["-m", "provisioner.lab.kube", "serve"]
