"""The route rules both the local netboot service and the boot-server agent decide with."""

from __future__ import annotations

import ast
from pathlib import Path

from provisioner.netboot import rules

NODES = {"cp1": {"name": "cp1", "ip": "10.0.0.11", "uuid": "7ab0c7b2-0c1d-4a4e-9d1a-000000000001"}}
BY_UUID = {n["uuid"]: n for n in NODES.values()}
BY_IP = {n["ip"]: n for n in NODES.values()}


def _ask(uuid: str | None, ip: str) -> tuple[object, str | None]:
    return rules.config_requester(BY_UUID, BY_IP, uuid, ip, lambda n: n["ip"], lambda n: n.get("uuid"))


def test_mac_forms_ipxe_sends_are_normalised_and_variables_are_refused() -> None:
    for raw in ("52-54-00-AA-00-01", "52:54:00:aa:00:01", "525400aa0001", "5254.00aa.0001"):
        assert rules.normalise_mac(raw) == "52:54:00:aa:00:01"
    assert rules.normalise_mac("${net0/mac:hexhyp}") is None and rules.normalise_mac("52:54") is None
    assert rules.normalise_uuid("${uuid}") is None
    assert (
        rules.normalise_uuid("7AB0C7B2-0C1D-4A4E-9D1A-000000000001") == "7ab0c7b2-0c1d-4a4e-9d1a-000000000001"
    )


def test_identify_prefers_the_boot_mac() -> None:
    by_mac = {"52:54:00:aa:00:01": "a"}
    by_uuid = {"u": "b"}
    assert rules.identify(by_mac, by_uuid, "52:54:00:aa:00:01", "u") == "a"
    assert rules.identify(by_mac, by_uuid, None, "u") == "b"
    assert rules.identify(by_mac, by_uuid, "52:54:00:aa:00:02", None) is None


def test_config_goes_only_to_the_nodes_own_address() -> None:
    cp1 = NODES["cp1"]
    assert _ask(cp1["uuid"], "10.0.0.11") == (cp1, None)
    assert _ask(None, "10.0.0.11") == (cp1, None)
    assert _ask(cp1["uuid"], "10.0.0.99") == (cp1, rules.FOREIGN_ADDRESS)
    assert _ask("7ab0c7b2-0c1d-4a4e-9d1a-000000000009", "10.0.0.11") == (cp1, rules.UUID_MISMATCH)
    assert _ask(None, "10.0.0.99") == (None, rules.NO_SUCH_NODE)


def test_rules_and_the_agent_need_only_the_standard_library() -> None:
    # The agent runs on a boot server with python3 alone: what it imports from us must too.
    for module in ("rules.py", "remote_agent.py"):
        tree = ast.parse((Path(rules.__file__).parent / module).read_text())
        third_party = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
        }
        assert third_party <= {
            "__future__",
            "argparse",
            "contextlib",
            "json",
            "os",
            "re",
            "shutil",
            "signal",
            "subprocess",
            "sys",
            "threading",
            "time",
            "uuid",
            "collections",
            "pathlib",
            "typing",
            "dataclasses",
        }, third_party
