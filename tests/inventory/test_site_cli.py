"""The site commands: validate, plan, bundles; selection; exit codes; output formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from inventory_sites import site, write

from provisioner.cli import main
from provisioner.errors import OperationError

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "inventory" / "examples" / "lab.yaml"
DC1 = ROOT / "inventory" / "examples" / "dc1"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, "--output", "json", *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("inventory", [LAB, DC1])
def test_examples_validate(capsys: pytest.CaptureFixture[str], inventory: Path) -> None:
    code, out, err = run(capsys, "--inventory", str(inventory), "validate")
    assert (code, err) == (0, "")
    assert ": valid (" in out


def test_dc1_shape(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--inventory", str(DC1), "validate")
    assert data["valid"] is True and data["warnings"] == []
    assert data["nodes"] >= 30 and data["racks"] == 3 and data["bundle"] == "paas-full"
    plan = run_json(capsys, "--inventory", str(DC1), "plan")
    nodes = [n for rack in plan["racks"] for n in rack["nodes"]]
    cps = [n for n in nodes if n["role"] == "controlplane"]
    assert len(cps) == 3 and len({n["rack"] for n in cps}) == 3, "control planes spread over the racks"
    assert {n["bmc"]["protocol"] for n in nodes} == {"ipmi", "redfish"}
    assert {n["bmc"]["password"].split(":")[0] for n in nodes} == {"env", "file"}
    assert all(n["boot_mode"] == "uefi" and n["data_disks"] and n["labels"] for n in nodes)
    tree = run_json(capsys, "--inventory", str(DC1), "tenants", "show")

    def depth(t: dict[str, Any]) -> int:
        return 1 + max((depth(c) for c in t["children"]), default=0)

    assert depth(tree) >= 4  # root + 3 levels below


def test_lab_shape(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(capsys, "--inventory", str(LAB), "plan")
    nodes = [n for rack in plan["racks"] for n in rack["nodes"]]
    assert sorted(n["role"] for n in nodes) == ["controlplane"] * 3 + ["worker"]
    assert {n["bmc"]["protocol"] for n in nodes} == {"ipmi", "redfish"}


def test_plan_text_lists_racks_nodes_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--inventory", str(DC1), "plan")
    assert code == 0
    assert "site stages: secrets -> machine-configs -> netboot" in out
    assert "rack r1 (11 nodes):" in out and "rack r3 (11 nodes):" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("r2-cp1 "))
    for value in (
        "controlplane",
        "10.40.0.121",
        "uefi",
        "0c:c4:7a:02:00:01",
        "/dev/nvme0n1",
        "ipmi://10.41.0.30:623",
    ):
        assert value in line


def test_plan_json_values_and_stages(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(capsys, "--inventory", str(LAB), "plan")
    assert plan["bundle"] == "paas-full"
    assert plan["api_endpoint"] == "https://192.168.77.10:6443"
    assert plan["stages"][0] == "secrets" and plan["stages"][-1] == "tenants"
    nodes = {n["name"]: n for n in plan["racks"][0]["nodes"]}
    # A node's steps are the phases its state record takes (the names ``up`` and ``status`` use).
    steps = ["powered-off", "pxe-set", "powered-on", "config-delivered", "installed", "ready"]
    assert all(nodes[n]["stages"] == steps for n in ("cp1", "cp2", "w1"))
    assert [n for n in nodes if nodes[n]["bootstraps_etcd"]] == ["cp1"]
    assert nodes["w1"]["config_delivery"] == "url"
    assert nodes["cp3"]["bmc"] == {
        "protocol": "redfish",
        "endpoint": "redfish://192.168.77.1:8443",
        "username": "admin",
        "password": "file:../../.lab/bmc-password",
        "verify_tls": True,
        "cipher_suite": None,
    }
    assert nodes["cp1"]["install_disk"] == "/dev/vda" and nodes["cp1"]["ip"] == "192.168.77.11"


def test_plan_apply_delivery_changes_node_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = site()
    data["cluster"]["talos"] = {"config_delivery": "apply"}
    path = write(tmp_path / "s.yaml", data)
    plan = run_json(capsys, "--inventory", str(path), "plan")
    node = plan["racks"][0]["nodes"][0]
    assert node["config_delivery"] == "apply" and "config-delivered" in node["stages"]


def test_rack_and_node_selection(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(capsys, "--inventory", str(DC1), "--rack", "r2", "plan")
    assert [r["name"] for r in plan["racks"]] == ["r2"]
    assert all(n["name"].startswith("r2-") for n in plan["racks"][0]["nodes"])
    plan = run_json(capsys, "--inventory", str(DC1), "--rack", "r1", "--rack", "r3", "plan")
    assert [r["name"] for r in plan["racks"]] == ["r1", "r3"]
    plan = run_json(capsys, "--inventory", str(DC1), "--node", "r3-w02", "--node", "r1-cp1", "plan")
    assert [(r["name"], [n["name"] for n in r["nodes"]]) for r in plan["racks"]] == [
        ("r1", ["r1-cp1"]),
        ("r3", ["r3-w02"]),
    ]


def test_unknown_rack_or_node_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--inventory", str(DC1), "--rack", "r9", "plan")
    assert (code, out) == (2, "")
    assert "--rack r9: no such rack (known: r1, r2, r3)" in err
    code, _, err = run(capsys, "--inventory", str(DC1), "--node", "ghost", "plan")
    assert code == 2 and "--node ghost: no such node" in err


def test_bundles_json_matches_the_reference_table(capsys: pytest.CaptureFixture[str]) -> None:
    data = {b["name"]: b for b in run_json(capsys, "bundles")}
    assert list(data) == ["paas-full", "paas-hosted", "distro-full", "distro-hosted"]
    common = {"cert-manager", "cozystack-controller", "metrics-server", "prometheus-crds"}
    monitoring = {"victoria-metrics", "grafana"}
    storage = {"piraeus-operator", "linstor", "snapshot-controller"}
    virt = {"kubevirt", "kubevirt-cdi", "kubevirt-instancetypes"}
    tenancy = {"tenants", "kamaji", "cluster-api", "cozystack-api", "dashboard"}
    everything = {"cilium", "kube-ovn", "multus", "metallb"} | storage | virt | tenancy | common | monitoring

    full = data["paas-full"]
    assert set(full["installs"]) == everything and full["excludes"] == []
    hosted = data["paas-hosted"]
    assert (
        set(hosted["installs"])
        == {"piraeus-operator", "tenants", "cozystack-api", "dashboard"} | common | monitoring
    )
    assert {"cilium", "linstor", "kubevirt", "metallb", "kamaji", "cluster-api"} <= set(hosted["excludes"])
    distro = data["distro-full"]
    assert set(distro["installs"]) == {"cilium", "metallb"} | storage | common
    assert set(distro["optional"]) == monitoring
    assert set(distro["excludes"]) == {"kube-ovn", "multus"} | virt | tenancy
    dh = data["distro-hosted"]
    assert set(dh["installs"]) == common and set(dh["optional"]) == monitoring
    for b in data.values():
        assert not set(b["installs"]) & set(b["excludes"])
        assert set(b["installs"]) | set(b["optional"]) | set(b["excludes"]) == everything
    assert [b["provisions_talos"] for b in data.values()] == [True, False, True, False]
    assert [b["requires_root_host"] for b in data.values()] == [True, True, False, False]


def test_bundles_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "bundles")
    assert code == 0
    assert (
        out.count("installs:") == 4
        and "distro-full: " in out
        and "optional: victoria-metrics, grafana" in out
    )


def test_exit_code_1_when_an_operation_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import provisioner.cli.site as site_cli

    def broken(*_: Any) -> Any:
        raise OperationError("BMC of n1 did not answer")

    monkeypatch.setattr(site_cli, "build_plan", broken)
    code, out, err = run(capsys, "--inventory", str(LAB), "plan")
    assert (code, out) == (1, "")
    assert err.strip() == "error: BMC of n1 did not answer"


@pytest.mark.parametrize(
    "argv",
    [
        ["--output", "yaml", "validate"],
        ["validate", "--bogus"],
        ["no-such-command"],
        ["--inventory", "/nonexistent/site.yaml", "validate"],
    ],
)
def test_exit_code_2_for_bad_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err and err.strip()


def test_inventory_from_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVISIONER_INVENTORY", str(DC1))
    data = run_json(capsys, "validate")
    assert data["cluster"] == "dc1"


def test_validate_json_reports_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = site()
    del data["networks"]["metallb"]
    path = write(tmp_path / "s.yaml", data)
    code, out, err = run(capsys, "--inventory", str(path), "--output", "json", "validate")
    assert code == 0
    assert [w["path"] for w in json.loads(out)["warnings"]] == ["networks"]
    assert "warning: " in err and "add networks.metallb.range" in err
