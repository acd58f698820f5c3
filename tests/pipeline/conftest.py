from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.fsutil import atomic_write, private_dir
from provisioner.inventory import load_inventory
from provisioner.inventory.model import Site
from provisioner.layout import StateLayout
from provisioner.talos.secrets import ensure_secrets
from provisioner.workflow import nodeflow

SITE = """
cluster:
  name: fake
  bundle: distro-full
  state_dir: {state}
  talos: {{config_delivery: {delivery}}}
  timeouts: {{boot: {boot}, boot_retries: {retries}, install: 5, etcd: 5, bmc_command: 1}}
networks:
  management: {{subnet: 10.98.0.0/24, gateway: 10.98.0.1, vip: 10.98.0.10}}
  metallb: {{range: 10.98.0.100-10.98.0.110}}
  netboot: {{server: 10.98.0.1}}
nodes:
{nodes}
"""

NODE = """  - name: {name}
    rack: {rack}
    role: {role}
    bmc: {{protocol: {protocol}, address: 10.98.1.{i}, username: admin, password: "env:FAKE_BMC_PW"{extra}}}
    boot: {{mac: "52:54:00:98:00:{i:02x}"}}
    ip: 10.98.0.{ip}
    data_disks: [/dev/sdb]
"""


_SECRETS: dict[str, bytes] = {}


def make_site(
    tmp_path: Path,
    boot: float = 10.0,
    retries: int = 1,
    protocol: str = "ipmi",
    extra: str = "",
    delivery: str = "url",
) -> Site:
    """The fake site: 3 control planes and a worker over two racks. Its secrets bundle is made
    once per test session and copied in (an RSA-4096 key takes seconds to generate)."""
    nodes = [
        ("cp1", "r1", "controlplane"),
        ("cp2", "r1", "controlplane"),
        ("cp3", "r2", "controlplane"),
        ("w1", "r2", "worker"),
    ]
    text = SITE.format(
        state=tmp_path / "state",
        delivery=delivery,
        boot=boot,
        retries=retries,
        nodes="".join(
            NODE.format(name=n, rack=r, role=role, i=i, ip=10 + i, protocol=protocol, extra=extra)
            for i, (n, r, role) in enumerate(nodes, 1)
        ),
    )
    (tmp_path / "site.yaml").write_text(text)
    site = load_inventory(tmp_path / "site.yaml").site
    secrets = StateLayout(site.state_dir).secrets
    if "bundle" not in _SECRETS:
        _SECRETS["bundle"] = ensure_secrets(site) and secrets.read_bytes()
    else:
        private_dir(secrets.parent)
        atomic_write(secrets, _SECRETS["bundle"], mode=0o600)
    return site


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """BMC step pauses in milliseconds, and a BMC password in the environment."""
    monkeypatch.setattr(nodeflow, "BMC_STEP_PAUSE", 0.01)
    monkeypatch.setenv("FAKE_BMC_PW", "fake-password")
    yield
