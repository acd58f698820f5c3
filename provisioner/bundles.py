"""The four Cozystack bundles as data: what each installs, excludes and requires.

Everything downstream (validation, the plan, the installer) asks these records
instead of comparing bundle names, so a bundle's behaviour is defined in one place.
Source: Cozystack v0.41 bundle definitions (see shared/reference/cozystack.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bundle:
    name: str
    summary: str
    provisions_talos: bool  # this tool installs Talos on bare metal
    cni: tuple[str, ...]
    storage: tuple[str, ...]
    virtualization: tuple[str, ...]
    metallb: bool
    multitenancy: tuple[str, ...]
    common: tuple[str, ...]
    monitoring: str  # "yes" | "optional"
    requires_root_host: bool

    @property
    def hosted(self) -> bool:
        return not self.provisions_talos

    @property
    def has_multitenancy(self) -> bool:
        return bool(self.multitenancy)

    @property
    def has_linstor(self) -> bool:
        return "linstor" in self.storage

    def installs(self) -> list[str]:
        """Components the bundle always installs, in the reference table's order."""
        parts = [*self.cni, *self.storage, *self.virtualization]
        if self.metallb:
            parts.append("metallb")
        parts += [*self.multitenancy, *self.common]
        if self.monitoring == "yes":
            parts += list(MONITORING)
        return parts

    def optional(self) -> list[str]:
        """Components the operator may add (Cozystack's ``bundle-enable``)."""
        return list(MONITORING) if self.monitoring == "optional" else []

    def excludes(self) -> list[str]:
        """Components some other bundle installs that this one never does."""
        mine = set(self.installs()) | set(self.optional())
        out: list[str] = []
        for bundle in BUNDLES.values():
            for component in bundle.installs():
                if component not in mine and component not in out:
                    out.append(component)
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "summary": self.summary,
            "provisions_talos": self.provisions_talos,
            "installs": self.installs(),
            "optional": self.optional(),
            "excludes": self.excludes(),
            "monitoring": self.monitoring,
            "requires_root_host": self.requires_root_host,
        }


MONITORING = ("victoria-metrics", "grafana")
_COMMON = ("cert-manager", "cozystack-controller", "metrics-server", "prometheus-crds")

BUNDLES: dict[str, Bundle] = {
    b.name: b
    for b in (
        Bundle(
            name="paas-full",
            summary="Talos on bare metal with networking, storage, virtualization and multitenancy",
            provisions_talos=True,
            cni=("cilium", "kube-ovn", "multus"),
            storage=("piraeus-operator", "linstor", "snapshot-controller"),
            virtualization=("kubevirt", "kubevirt-cdi", "kubevirt-instancetypes"),
            metallb=True,
            multitenancy=("tenants", "kamaji", "cluster-api", "cozystack-api", "dashboard"),
            common=_COMMON,
            monitoring="yes",
            requires_root_host=True,
        ),
        Bundle(
            name="paas-hosted",
            summary="Cozystack PaaS on an existing Kubernetes cluster",
            provisions_talos=False,
            cni=(),
            storage=("piraeus-operator",),
            virtualization=(),
            metallb=False,
            multitenancy=("tenants", "cozystack-api", "dashboard"),
            common=_COMMON,
            monitoring="yes",
            requires_root_host=True,
        ),
        Bundle(
            name="distro-full",
            summary="Talos on bare metal as a Kubernetes distribution: cilium, LINSTOR storage, MetalLB",
            provisions_talos=True,
            cni=("cilium",),
            storage=("piraeus-operator", "linstor", "snapshot-controller"),
            virtualization=(),
            metallb=True,
            multitenancy=(),
            common=_COMMON,
            monitoring="optional",
            requires_root_host=False,
        ),
        Bundle(
            name="distro-hosted",
            summary="Cozystack's common components on an existing Kubernetes cluster",
            provisions_talos=False,
            cni=(),
            storage=(),
            virtualization=(),
            metallb=False,
            multitenancy=(),
            common=_COMMON,
            monitoring="optional",
            requires_root_host=False,
        ),
    )
}
