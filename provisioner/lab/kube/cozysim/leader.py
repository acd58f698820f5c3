"""One active simulator at a time, through a coordination.k8s.io Lease (as client-go's leaderelection).

Why: the lab runs one simulator per control plane; two acting at once would fight over the same
statuses. The Lease ``cozy-system/cozystack-simulator`` names the holder; the holder renews it every
``duration / 3`` seconds; another instance takes it over once ``renewTime + leaseDurationSeconds`` has
passed (the holder died or lost its network). Writes use the Lease's resourceVersion, so two candidates
racing for an expired lease cannot both win (the loser gets 409 Conflict). On a clean stop the holder
empties ``holderIdentity`` so the next instance takes over at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from lightkube import ApiError, AsyncClient

from provisioner.lab.kube.cozysim import kinds

log = logging.getLogger("cozysim")
NAMESPACE = "cozy-system"
NAME = "cozystack-simulator"


def _micro(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def expired(spec: dict[str, Any], now: dt.datetime) -> bool:
    """Whether a lease spec no longer protects its holder (or names none)."""
    if not spec.get("holderIdentity"):
        return True
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    if renewed is None:
        return True
    return now > renewed + dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 15))


class LeaderElector:
    """Acquire and renew the simulator's Lease; ``is_leader`` says whether this instance may act."""

    def __init__(self, client: AsyncClient, identity: str, duration: int = 15) -> None:
        self.client = client
        self.identity = identity
        self.duration = duration
        self.is_leader = False
        self.renewed_at = 0.0  # time.monotonic() of the last successful acquire or renewal

    def check_deadline(self) -> None:
        """Stop acting when the lease could not be renewed for 2/3 of its duration (client-go's
        renewDeadline): by then another instance may be about to take it, and two leaders must not act."""
        if self.is_leader and time.monotonic() - self.renewed_at > self.duration * 2 / 3:
            log.info("%s could not renew the lease in time: standing down", self.identity)
            self._set(False)

    def _spec(self, now: dt.datetime, acquired: str | None, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": acquired or _micro(now),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One election step; returns (and records) whether this instance holds the lease afterwards."""
        now = dt.datetime.now(dt.UTC)
        try:
            current = kinds.as_dict(await self.client.get(kinds.LEASE.res, NAME, namespace=NAMESPACE))
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": self._spec(now, None, 0),
            }
            try:
                await self.client.create(kinds.LEASE.res.from_dict(body))
            except ApiError as create_exc:
                if create_exc.status.code in (404, 409):  # namespace missing, or another instance won
                    return self._set(False)
                raise
            return self._set(True)
        spec = current.get("spec") or {}
        mine = spec.get("holderIdentity") == self.identity
        if not mine and not expired(spec, now):
            return self._set(False)
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        current["spec"] = self._spec(now, spec.get("acquireTime") if mine else None, transitions)
        try:
            await self.client.replace(kinds.LEASE.res.from_dict(current))
        except ApiError as exc:
            if exc.status.code in (404, 409):
                return self._set(False)
            raise
        return self._set(True)

    def _set(self, leader: bool) -> bool:
        if leader:
            self.renewed_at = time.monotonic()
        if leader != self.is_leader:
            log.info("%s %s the lease %s/%s", self.identity, "holds" if leader else "lost", NAMESPACE, NAME)
        self.is_leader = leader
        return leader

    async def release(self) -> None:
        """Give the lease up (clean stop) so another instance takes over without waiting for expiry."""
        if not self.is_leader:
            return
        try:
            current = kinds.as_dict(await self.client.get(kinds.LEASE.res, NAME, namespace=NAMESPACE))
            if (current.get("spec") or {}).get("holderIdentity") == self.identity:
                current["spec"]["holderIdentity"] = ""
                current["spec"]["renewTime"] = _micro(dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
                await self.client.replace(kinds.LEASE.res.from_dict(current))
        except ApiError as exc:
            log.info("could not release the lease: %s", exc)
        self.is_leader = False
