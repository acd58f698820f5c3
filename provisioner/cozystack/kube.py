"""A thin Kubernetes client for the platform stage, on lightkube: dicts in, dicts out.

Why a wrapper at all: every call gets the same error policy, which the stages rely on.
- Retries with exponential backoff only for what a retry can fix: HTTP 5xx and dropped
  connections (reset, refused while the API restarts). A 4xx is the caller's problem, raised at once.
- An endpoint that stays unreachable is an ``OperationError`` naming it; a server whose
  certificate does not chain to the kubeconfig's CA (a kubeconfig for another cluster) is an
  ``InputError`` naming both, never retried.
- Every write is server-side apply with field manager ``provisioner``; the caller decides
  whether a write is needed at all (``apply.py`` compares with what is live).
It counts its own reads and writes, which is what "a rerun makes zero writes" is checked with.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource

from ..errors import InputError, OperationError
from .manifests import FIELD_MANAGER

log = logging.getLogger(__name__)
T = TypeVar("T")
Obj = dict[str, Any]

# Custom kinds the stage reads or writes: (apiVersion, kind) -> (plural, namespaced).
CUSTOM_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): ("helmreleases", True),
    ("piraeus.io/v1", "LinstorSatelliteConfiguration"): ("linstorsatelliteconfigurations", False),
    ("piraeus.io/v1", "LinstorSatellite"): ("linstorsatellites", False),
    ("metallb.io/v1beta1", "IPAddressPool"): ("ipaddresspools", True),
    ("metallb.io/v1beta1", "L2Advertisement"): ("l2advertisements", True),
    ("cozystack.io/v1alpha1", "Package"): ("packages", False),
    ("cozystack.io/v1alpha1", "PackageSource"): ("packagesources", False),
    ("apps.cozystack.io/v1alpha1", "Tenant"): ("tenants", True),
    ("kubevirt.io/v1", "KubeVirt"): ("kubevirts", True),
    ("cdi.kubevirt.io/v1beta1", "CDI"): ("cdis", False),
}


def _register() -> None:
    for (api_version, kind), (plural, namespaced) in CUSTOM_KINDS.items():
        group, _, version = api_version.rpartition("/")
        maker = create_namespaced_resource if namespaced else create_global_resource
        maker(group, version, kind, plural)


_register()


def resource_class(api_version: str, kind: str) -> Any:
    """The lightkube class for a kind: built-in models, or the generic ones registered above."""
    try:
        return codecs.resource_registry.load(api_version, kind)
    except Exception as exc:  # lightkube raises LoadResourceError for unknown kinds
        raise InputError(f"unknown kind {kind} ({api_version}): the platform stage cannot handle it") from exc


def obj_key(obj: Obj) -> str:
    """``Kind ns/name`` or ``Kind name``: how objects are named in messages and the journal."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


@dataclass
class Counters:
    reads: int = 0
    writes: int = 0
    retries: int = 0
    by_verb: dict[str, int] = field(default_factory=dict)

    def count(self, verb: str) -> None:
        self.by_verb[verb] = self.by_verb.get(verb, 0) + 1
        if verb in ("apply", "delete"):
            self.writes += 1
        else:
            self.reads += 1


def _is_tls_trust_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status.code is not None and exc.status.code >= 500
    return isinstance(exc, httpx.TransportError) and not _is_tls_trust_failure(exc)


class Kube:
    """One API server, reached through one kubeconfig."""

    def __init__(
        self, kubeconfig: Path, *, attempts: int = 8, base_delay: float = 0.2, max_delay: float = 5.0
    ) -> None:
        self.kubeconfig = kubeconfig
        try:
            config = KubeConfig.from_file(str(kubeconfig))
            single = config.get()
            if single is None:
                raise ValueError("no current context")
        except FileNotFoundError:
            raise InputError(f"kubeconfig {kubeconfig} does not exist") from None
        except (ConfigError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"kubeconfig {kubeconfig} is not usable: {exc}") from None
        self.endpoint: str = single.cluster.server
        self.client = AsyncClient(config=single, field_manager=FIELD_MANAGER, timeout=httpx.Timeout(30.0))
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.counters = Counters()

    async def close(self) -> None:
        await self.client.close()

    async def _call(self, verb: str, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one API call with the retry policy; ``what`` names the object for errors."""
        for attempt in range(1, self.attempts + 1):
            self.counters.count(verb)
            try:
                return await fn()
            except (ApiError, httpx.TransportError) as exc:
                if _is_tls_trust_failure(exc):
                    raise InputError(
                        f"the API server at {self.endpoint} presented a certificate not signed by the CA in "
                        f"kubeconfig {self.kubeconfig}: refused (a kubeconfig for another cluster?)"
                    ) from None
                if not _retryable(exc) or attempt == self.attempts:
                    raise self._error(verb, what, exc) from None
                self.counters.retries += 1
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * (
                    0.5 + random.random() / 2
                )
                log.info("%s %s: %s; retry %d in %.1fs", verb, what, _describe(exc), attempt, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _error(self, verb: str, what: str, exc: BaseException) -> Exception:
        if isinstance(exc, ApiError):
            return ApiCallError(
                verb, what, exc.status.code or 0, exc.status.message or str(exc), self.endpoint
            )
        return OperationError(
            f"Kubernetes API at {self.endpoint} is unreachable ({verb} {what}): {_describe(exc)}"
        )

    # -- reads
    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object as a dict, or None when it does not exist."""
        cls = resource_class(api_version, kind)
        what = f"{kind} {namespace + '/' if namespace else ''}{name}"
        try:
            res = await self._call("get", what, lambda: self.client.get(cls, name, namespace=namespace))
        except ApiCallError as exc:
            if exc.code == 404:
                return None
            raise
        return _as_dict(res)

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[Obj]:
        """Every object of a kind (``namespace=None`` with a namespaced kind: all namespaces)."""
        cls = resource_class(api_version, kind)
        ns = namespace if namespace is not None else ("*" if _namespaced(cls) else None)

        async def run() -> list[Obj]:
            selector: Any = labels
            return [_as_dict(o) async for o in self.client.list(cls, namespace=ns, labels=selector)]

        return await self._call("list", f"{kind} list", run)

    async def watch(
        self, api_version: str, kind: str, namespace: str | None = None, server_timeout: int = 60
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Watch events ``(type, object)``; the caller re-lists and re-watches when it ends."""
        cls = resource_class(api_version, kind)
        ns = namespace if namespace is not None else ("*" if _namespaced(cls) else None)
        self.counters.count("watch")
        try:
            async for event, obj in self.client.watch(cls, namespace=ns, server_timeout=server_timeout):
                yield event, _as_dict(obj)
        except (ApiError, httpx.TransportError) as exc:
            if _is_tls_trust_failure(exc):
                raise InputError(
                    f"the API server at {self.endpoint} is not trusted by kubeconfig {self.kubeconfig}"
                ) from None
            if not _retryable(exc):
                raise self._error("watch", kind, exc) from None
            log.info("watch %s ended: %s", kind, _describe(exc))
        except httpx.HTTPStatusError as exc:
            # lightkube raises this (not ApiError) when a watch request itself is answered 5xx/4xx
            code = exc.response.status_code
            if code < 500:
                raise ApiCallError("watch", kind, code, exc.response.reason_phrase, self.endpoint) from None
            log.info("watch %s ended: HTTP %d", kind, code)  # the caller re-lists and re-watches

    async def server_version(self) -> str:
        """A cheap authenticated read proving the endpoint answers and trusts us (``kube-system``)."""
        ns = await self.get("v1", "Namespace", "kube-system")
        return "ok" if ns is not None else "no kube-system"

    # -- writes
    async def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        """Server-side apply ``obj`` as field manager ``provisioner``."""
        cls = resource_class(obj["apiVersion"], obj["kind"])
        res = cls.from_dict(obj) if hasattr(cls, "from_dict") else codecs.from_dict(obj)
        # lightkube takes the namespace from the object's own metadata
        out = await self._call("apply", obj_key(obj), lambda: self.client.apply(res, force=force))
        return _as_dict(out)

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        cls = resource_class(api_version, kind)
        what = f"{kind} {namespace + '/' if namespace else ''}{name}"
        try:
            await self._call("delete", what, lambda: self.client.delete(cls, name, namespace=namespace))
        except ApiCallError as exc:
            if exc.code != 404:
                raise


class ApiCallError(OperationError):
    """The API refused a call (4xx, or 5xx after the retries): names the object and the endpoint."""

    def __init__(self, verb: str, what: str, code: int, message: str, endpoint: str) -> None:
        super().__init__(f"{verb} {what} at {endpoint}: HTTP {code}: {message}")
        self.code = code
        self.api_message = message


def _namespaced(cls: Any) -> bool:
    from lightkube.core.resource import NamespacedResource

    return isinstance(cls, type) and issubclass(cls, NamespacedResource)


def _as_dict(res: Any) -> Obj:
    if isinstance(res, dict):
        return res
    to_dict = getattr(res, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"cannot read a {type(res).__name__} returned by lightkube")
    return dict(to_dict())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status.code}: {exc.status.message}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
