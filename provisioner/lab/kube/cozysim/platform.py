"""What the platform renders: the bundle's namespaces and HelmReleases, from v0 or v1 configuration.

Pure functions, no API calls. Rules, all from ``provisioner/cozystack/upstream/`` (``bundles/README.md``
and ``notes/platform-install.md`` §1.3-1.5, §7):

- v0 (ConfigMap ``cozy-system/cozystack``): ``bundle-name`` picks the release list. An ``optional``
  release is rendered only when named in ``bundle-enable``; the OIDC-gated (``disabled``) keycloak
  releases only when ``oidc-enabled == "true"`` (and, if also optional, enabled); names in
  ``bundle-disable`` are removed and dropped from every ``dependsOn`` (other dangling names are kept, as
  upstream keeps them). ``dependsOn`` becomes ``{name, namespace}`` with the dependency's namespace.
  paas-* bundles fail to render without ``root-host`` or ``api-server-endpoint``, with upstream's
  message ("ERROR need root-host in cozystack ConfigMap").
- Always: HelmRelease ``tenant-root/tenant-root`` (chart ``tenant`` from ``cozy-public/cozystack-apps``),
  depending on cilium and/or kubeovn when the bundle renders them (templates/apps.yaml).
- v1 (Package ``cozystack.cozystack-platform``): the reference holds v0.41.11 release lists only, so the
  simulator reuses them: ``isp-full`` and ``isp-full-generic`` render the paas-full list, ``isp-hosted``
  the paas-hosted list. ``publishing.host`` / ``publishing.apiServerEndpoint`` play root-host /
  api-server-endpoint (required, like the paas guard), ``bundles.enabledPackages`` /
  ``disabledPackages`` (``cozystack.<release>``) play bundle-enable / bundle-disable, and
  ``authentication.oidc.enabled`` plays oidc-enabled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.lab.kube.cozysim import upstream

V1_VARIANTS = {"isp-full": "paas-full", "isp-full-generic": "paas-full", "isp-hosted": "paas-hosted"}
CNI_RELEASES = ("cilium", "kubeovn")
SYSTEM_REPO = ("cozy-system", "cozystack-system")
APPS_REPO = ("cozy-public", "cozystack-apps")
OIDC_RELEASES = ("keycloak", "keycloak-operator", "keycloak-configure")
SYSTEM_APP_LABEL = "cozystack.io/system-app"


class RenderError(ValueError):
    """The platform cannot be rendered from this configuration; the message is upstream's wording."""


@dataclass(frozen=True)
class Release:
    """One HelmRelease the platform renders."""

    name: str
    namespace: str
    release_name: str
    chart: str
    depends_on: tuple[tuple[str, str], ...]  # (namespace, name)
    repo: tuple[str, str] = SYSTEM_REPO
    system_app: bool = True
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Platform:
    """The rendered platform: bundle name, the values it was rendered with, and its releases."""

    bundle: str
    root_host: str
    api_server_endpoint: str
    releases: tuple[Release, ...]
    external_ips: tuple[str, ...] = ()
    expose_ingress: str = "tenant-root"

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace the platform creates, sorted (release namespaces, cozy-public, tenant-root)."""
        names = {r.namespace for r in self.releases} | {"cozy-system", "cozy-public", "tenant-root"}
        return tuple(sorted(names))

    def release(self, name: str) -> Release | None:
        return next((r for r in self.releases if r.name == name), None)

    @property
    def cni(self) -> tuple[Release, ...]:
        """The CNI releases (cilium, kubeovn) this platform installs; empty for hosted bundles."""
        return tuple(r for r in self.releases if r.name in CNI_RELEASES and r.system_app)


def _csv(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def render_bundle(
    bundle_name: str,
    *,
    root_host: str = "",
    api_server_endpoint: str = "",
    enable: set[str] | frozenset[str] = frozenset(),
    disable: set[str] | frozenset[str] = frozenset(),
    oidc: bool = False,
    external_ips: tuple[str, ...] = (),
    expose_ingress: str = "tenant-root",
    what: str = "bundle-name",
) -> Platform:
    """Render one bundle's releases (see the module docstring for the rules). Raises RenderError."""
    if not bundle_name:
        raise RenderError(f"ERROR need {what} in cozystack ConfigMap")
    try:
        entries = upstream.bundle(bundle_name)
    except KeyError:
        raise RenderError(
            f"ERROR unknown bundle {bundle_name!r} (known: {', '.join(upstream.BUNDLES)})"
        ) from None
    if bundle_name.startswith("paas-"):
        if not root_host:
            raise RenderError("ERROR need root-host in cozystack ConfigMap")
        if not api_server_endpoint:
            raise RenderError("ERROR need api-server-endpoint in cozystack ConfigMap")
    namespace_of = {e.name: e.namespace for e in entries}
    chosen = []
    for entry in entries:
        if entry.name in disable:
            continue
        if entry.optional and entry.name not in enable:
            continue
        if entry.disabled and not oidc:
            continue
        chosen.append(entry)
    releases = []
    for entry in chosen:
        deps = [d for d in entry.depends_on if d not in disable]
        if entry.name == "dashboard" and oidc and bundle_name.startswith("paas-"):
            # paas-* dashboard gains keycloak-configure (and cozystack-api in paas-hosted) with OIDC on.
            extra = (
                ["keycloak-configure"]
                if bundle_name == "paas-full"
                else ["keycloak-configure", "cozystack-api"]
            )
            deps += [d for d in extra if d not in deps and d not in disable]
        releases.append(
            Release(
                name=entry.name,
                namespace=entry.namespace,
                release_name=entry.release_name,
                chart=entry.chart,
                depends_on=tuple((namespace_of.get(d, entry.namespace), d) for d in deps),
            )
        )
    rendered = {r.name for r in releases}
    cni_deps = tuple((namespace_of[n], n) for n in CNI_RELEASES if n in rendered)
    releases.append(
        Release(
            name="tenant-root",
            namespace="tenant-root",
            release_name="tenant-root",
            chart="tenant",
            depends_on=cni_deps,
            repo=APPS_REPO,
            system_app=False,
            values={"host": root_host},
        )
    )
    return Platform(
        bundle=bundle_name,
        root_host=root_host,
        api_server_endpoint=api_server_endpoint,
        releases=tuple(releases),
        external_ips=external_ips,
        expose_ingress=expose_ingress,
    )


def render_v0(data: Mapping[str, str]) -> Platform:
    """Render from the data of ConfigMap ``cozy-system/cozystack``. Raises RenderError."""
    return render_bundle(
        (data.get("bundle-name") or "").strip(),
        root_host=(data.get("root-host") or "").strip(),
        api_server_endpoint=(data.get("api-server-endpoint") or "").strip(),
        enable=_csv(data.get("bundle-enable")),
        disable=_csv(data.get("bundle-disable")),
        oidc=(data.get("oidc-enabled") or "").strip() == "true",
        external_ips=tuple(sorted(_csv(data.get("expose-external-ips")))),
        expose_ingress=(data.get("expose-ingress") or "tenant-root").strip(),
    )


def _dig(values: Mapping[str, Any], *path: str) -> Any:
    node: Any = values
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _package_names(value: Any) -> set[str]:
    if not isinstance(value, list):
        return set()
    return {str(v).removeprefix("cozystack.") for v in value}


def render_v1(package: Mapping[str, Any]) -> Platform:
    """Render from Package ``cozystack.cozystack-platform`` (its spec). Raises RenderError.

    Variant names outside isp-full / isp-full-generic / isp-hosted are refused with the
    operator's reason wording (VariantNotFound); see the module docstring for the value mapping.
    """
    spec = package.get("spec") or {}
    variant = str(spec.get("variant") or "")
    if variant not in V1_VARIANTS:
        raise RenderError(
            f"VariantNotFound: variant {variant!r} is not simulated (known: {', '.join(sorted(V1_VARIANTS))})"
        )
    values = _dig(spec, "components", "platform", "values") or {}
    host = str(_dig(values, "publishing", "host") or "")
    endpoint = str(_dig(values, "publishing", "apiServerEndpoint") or "")
    if not host:
        raise RenderError("InvalidConfiguration: need publishing.host in the platform Package values")
    if not endpoint:
        raise RenderError(
            "InvalidConfiguration: need publishing.apiServerEndpoint in the platform Package values"
        )
    ips = _dig(values, "publishing", "externalIPs")
    return render_bundle(
        V1_VARIANTS[variant],
        root_host=host,
        api_server_endpoint=endpoint,
        enable=_package_names(_dig(values, "bundles", "enabledPackages")),
        disable=_package_names(_dig(values, "bundles", "disabledPackages")),
        oidc=_dig(values, "authentication", "oidc", "enabled") is True,
        external_ips=tuple(str(ip) for ip in ips) if isinstance(ips, list) else (),
        expose_ingress=str(_dig(values, "publishing", "ingressName") or "tenant-root"),
    )


def helmrelease_manifest(release: Release) -> dict[str, Any]:
    """The HelmRelease object as the platform chart writes it (notes/platform-install.md §1.5)."""
    labels = {"cozystack.io/repository": "system" if release.repo == SYSTEM_REPO else "apps"}
    if release.system_app:
        labels[SYSTEM_APP_LABEL] = "true"
    else:
        labels.update(
            {
                "cozystack.io/ui": "true",
                "apps.cozystack.io/application.kind": "Tenant",
                "apps.cozystack.io/application.group": "apps.cozystack.io",
                "apps.cozystack.io/application.name": release.name.removeprefix("tenant-"),
            }
        )
    spec: dict[str, Any] = {
        "interval": "5m" if release.system_app else "0s",
        "releaseName": release.release_name,
        "chart": {
            "spec": {
                "chart": release.chart,
                "reconcileStrategy": "Revision",
                "sourceRef": {
                    "kind": "HelmRepository",
                    "namespace": release.repo[0],
                    "name": release.repo[1],
                },
                "version": ">= 0.0.0-0",
            }
        },
        "install": {"crds": "CreateReplace", "remediation": {"retries": -1}},
        "upgrade": {"crds": "CreateReplace", "remediation": {"retries": -1}},
        "dependsOn": [{"name": name, "namespace": ns} for ns, name in release.depends_on],
    }
    if release.values:
        spec["values"] = dict(release.values)
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": release.name, "namespace": release.namespace, "labels": labels},
        "spec": spec,
    }


def dependency_levels(releases: tuple[Release, ...]) -> dict[str, int]:
    """Each release's depth in the dependency graph (0 = no dependency among the rendered ones).

    Dependencies that are not rendered (dangling, as upstream allows) count as unsatisfiable: their
    dependents get no level, mirroring a HelmRelease that waits forever.
    """
    by_key = {r.key: r for r in releases}
    levels: dict[str, int] = {}

    def level(key: str, seen: frozenset[str]) -> int | None:
        if key in levels:
            return levels[key]
        rel = by_key.get(key)
        if rel is None or key in seen:
            return None
        depth = 0
        for ns, name in rel.depends_on:
            sub = level(f"{ns}/{name}", seen | {key})
            if sub is None:
                return None
            depth = max(depth, sub + 1)
        levels[key] = depth
        return depth

    for key in by_key:
        level(key, frozenset())
    return levels
