"""A hosted bundle has no hardware stage: ``up`` begins at the first Kubernetes stage."""

from __future__ import annotations

from pathlib import Path

from provisioner.bundles import Bundle
from provisioner.inventory import load_inventory
from provisioner.layout import StateLayout
from provisioner.pipeline.context import RunContext
from provisioner.pipeline.stages import HARDWARE_STAGES, STAGES, stage_names
from provisioner.pipeline.up import up

SITE = """
cluster:
  name: hosted
  bundle: paas-hosted
  root_host: hosted.example.com
  api_server_endpoint: https://10.0.0.1:6443
  state_dir: {state}
hosted:
  kubeconfig: kubeconfig
"""


class RecordingStage:
    """Stands in for ``api-ready`` (the real one needs a Kubernetes API): records what it got."""

    name = "api-ready"
    seen: list[tuple[str, Path | None]] = []

    def applies(self, bundle: Bundle) -> bool:
        return True

    def done(self, layout: StateLayout) -> bool:
        return False

    async def run(self, ctx: RunContext) -> None:
        self.seen.append((ctx.site.cluster.name, ctx.kubeconfig))


def test_hosted_bundle_starts_at_api_ready_with_the_inventorys_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "site.yaml").write_text(SITE.format(state=tmp_path / "state"))
    site = load_inventory(tmp_path / "site.yaml").site
    assert stage_names(site.cluster.bundle_spec)[0] == "api-ready"
    assert not any(s.applies(site.cluster.bundle_spec) for s in HARDWARE_STAGES)
    assert len(STAGES) > len(HARDWARE_STAGES)

    stage = RecordingStage()
    result = up(site, [], "lines", stages=[*HARDWARE_STAGES, stage], netboot=None)
    assert result.ok and result.cluster == "hosted" and result.nodes == []
    assert list(result.stages) == ["api-ready"]
    assert stage.seen == [("hosted", tmp_path / "kubeconfig")]
    assert result.kubeconfig == str(tmp_path / "kubeconfig")
    assert not StateLayout(site.state_dir).secrets.exists()  # no hardware stage ran
