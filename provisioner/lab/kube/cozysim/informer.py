"""A list-then-watch cache of one resource kind, the way client-go's informers keep one.

Why: controllers decide from a local copy and react to changes instead of polling. The watch resumes
from the last resourceVersion it saw after a dropped connection or a server-side timeout; only a
410 Gone (history compacted) forces a fresh list. A watch that stays open but delivers nothing for
``idle`` seconds (a stalled watch, one of the stand-in's faults) is abandoned and resumed the same way.
A kind that is not served yet (its CRD or APIService is missing: 404) is retried every ``retry`` seconds
or as soon as ``poke()`` is called (the controller pokes after it creates CRDs).

The cache only moves forward: the controller puts its own write results in it at once (``store``), ahead
of the watch, so a watch event older than the cached version of its object is not taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.core import exceptions as lightkube_exceptions

from provisioner.lab.kube.cozysim.kinds import Kind, as_dict, key

log = logging.getLogger("cozysim")
# lightkube's HTTP library (httpx, or httpx2 in lightkube >= 1.0), whichever this lightkube uses.
HTTPError: type[Exception] = lightkube_exceptions.httpx.HTTPError


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Informer:
    """Cache of ``kind`` (in ``namespace`` or all), calling ``on_change`` after every change."""

    def __init__(
        self,
        client: AsyncClient,
        kind: Kind,
        on_change: Callable[[], None],
        *,
        namespace: str | None = None,
        idle: float = 15.0,
        retry: float = 3.0,
    ) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.served = False
        self.synced = asyncio.Event()
        self._on_change = on_change
        self._idle = idle
        self._retry = retry
        self._poke = asyncio.Event()
        self._rv: str | None = None
        self.lists = 0  # full lists done: once at start, then only after a 410 or a 404
        self._failures = 0

    def poke(self) -> None:
        """Retry now if the kind was not served at the last attempt."""
        self._poke.set()

    def get(self, name: str, namespace: str = "") -> dict[str, Any] | None:
        return self.items.get((namespace, name))

    def values(self) -> list[dict[str, Any]]:
        return list(self.items.values())

    def store(self, obj: dict[str, Any]) -> None:
        """Take an object returned by a write, unless the cache already holds a newer version."""
        k = key(obj)
        old = self.items.get(k)
        if old is None or _rv(obj) >= _rv(old):
            self.items[k] = obj

    def _take(self, op: str, obj: dict[str, Any]) -> bool:
        """Apply one watch event; False when the cache already holds a newer version of the object.

        Why: a watch that lags behind (CPU load) still delivers older versions of an object the
        controller has since written and ``store``d. Taking them rolled the cached object back, a pass
        decided from that old version, and its status write (a merge patch of /status, replacing the
        status) overwrote the newer status on the server: a HelmRelease already installed went back to
        ``DependencyNotReady`` with its generation marked attempted, a state helm-controller's rules
        never leave, and the platform install waited out its timeout. A late DELETED (an object created
        again since) is ignored the same way.
        """
        k = key(obj)
        old = self.items.get(k)
        if old is not None and _rv(old) > _rv(obj):
            return False
        if op == "DELETED":
            self.items.pop(k, None)
        else:
            self.items[k] = obj
        return True

    def forget(self, namespace: str, name: str) -> None:
        self.items.pop((namespace, name), None)

    def _ns(self) -> str | None:
        if not self.kind.namespaced:
            return None
        return self.namespace if self.namespace else ALL_NS

    async def _wait_retry(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poke.wait(), self._retry)
        self._poke.clear()

    async def _list(self) -> None:
        listing = self.client.list(self.kind.res, namespace=self._ns())
        items: dict[tuple[str, str], dict[str, Any]] = {}
        async for obj in listing:
            d = as_dict(obj)
            items[key(d)] = d
        self._rv = listing.resourceVersion
        self.items = items
        self.served = True
        self.lists += 1
        self.synced.set()
        self._on_change()

    async def _watch(self) -> None:
        stream = self.client.watch(
            self.kind.res,
            namespace=self._ns(),
            resource_version=self._rv,
            server_timeout=max(1, int(self._idle) - 5),
        )
        iterator = stream.__aiter__()
        try:
            while True:
                op, obj = await asyncio.wait_for(iterator.__anext__(), self._idle)
                d = as_dict(obj)
                rv = (d.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self._rv = rv
                if op in ("ADDED", "MODIFIED", "DELETED") and self._take(op, d):
                    self._on_change()
        finally:
            with contextlib.suppress(Exception):
                await iterator.aclose()  # type: ignore[attr-defined]

    def _backoff(self) -> float:
        """0.3 s after one failure, doubling to 5 s while the server stays unreachable."""
        self._failures += 1
        return min(0.3 * 2 ** (self._failures - 1), 5.0)

    async def run(self) -> None:
        """List, then watch forever; see the module docstring for the resume rules."""
        need_list = self._rv is None  # a restarted informer resumes its watch where it stopped
        self._failures = 0
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                self._failures = 0
                await self._watch()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                log.info(
                    "watch of %s idle for %.0f s: resuming from %s", self.kind.label, self._idle, self._rv
                )
            except StopAsyncIteration:
                continue
            except ApiError as exc:
                code = exc.status.code if exc.status else 0
                if code == 404:
                    if self.served:
                        log.info("%s no longer served", self.kind.label)
                    self.served = False
                    self.items = {}
                    need_list = True
                    await self._wait_retry()
                elif code == 410:
                    log.info(
                        "watch of %s: resourceVersion %s too old, listing again", self.kind.label, self._rv
                    )
                    need_list = True
                else:
                    log.warning("watch of %s: %s", self.kind.label, exc)
                    await asyncio.sleep(self._backoff())
            except (HTTPError, OSError) as exc:
                # Routine: the server ends watches at timeoutSeconds and lightkube may reuse the closed
                # connection for the next one; injected resets land here too. Resuming is the cure.
                log.debug("watch of %s interrupted (%s): resuming from %s", self.kind.label, exc, self._rv)
                await asyncio.sleep(self._backoff())
