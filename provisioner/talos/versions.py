"""What changes in the machine-config contract between Talos versions.

Talos 1.12 moved host networking out of ``machine.network``/``machine.time`` into their
own documents (``HostnameConfig``, ``LinkConfig``, ``Layer2VIPConfig``, ``ResolverConfig``,
``TimeSyncConfig``...) and dropped feature flags that became always-on; the 1.13 schema no
longer has the old keys at all. Templates branch on these flags rather than on version
strings, so the difference lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..inventory.model import Talos


@dataclass(frozen=True)
class Contract:
    minor: tuple[int, int]
    # network, hostname, time and VIP as separate documents (1.12+)
    multidoc_network: bool
    # features.rbac/stableHostname/apidCheckExtKeyUsage present (always on and removed in 1.12+)
    legacy_feature_flags: bool
    # install.extraKernelArgs exists (gone in the 1.13 schema; UKI/grub cmdline instead)
    install_extra_kernel_args: bool
    # apiServer.disablePodSecurityPolicy, a no-op since Kubernetes 1.25, gone in the 1.13
    # schema; omitting it is harmless on every version, talosctl 1.11 still writes it
    pod_security_policy_flag: bool

    @property
    def template_suffix(self) -> str:
        return "multidoc" if self.multidoc_network else "legacy"


def contract_for(talos: Talos) -> Contract:
    minor = talos.minor
    new = minor >= (1, 12)
    return Contract(
        minor=minor,
        multidoc_network=new,
        legacy_feature_flags=not new,
        install_extra_kernel_args=not new,
        pod_security_policy_flag=not new,
    )
