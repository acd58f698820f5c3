"""Fault injection for the BMC emulators: real BMCs fail, lie and hang; ours can too.

One ``FaultInjector`` per emulator process decides, per request, whether the request
is answered normally, answered with an explicit error, acknowledged without doing
anything (a "silent no-op": the failure verify-after-set exists to catch), or never
answered (a timeout). It also holds the per-request latency the benchmark injects.
Decisions come from a seeded RNG so a failing test run can be replayed.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from enum import Enum


class Fault(Enum):
    NONE = "none"
    ERROR = "error"  # answer with an explicit failure
    NOOP = "noop"  # acknowledge a change but do not perform it
    TIMEOUT = "timeout"  # do not answer at all


@dataclass(frozen=True)
class FaultSpec:
    """Rates are probabilities per request; ``latency`` is seconds added to every answer."""

    error_rate: float = 0.0
    noop_rate: float = 0.0
    timeout_rate: float = 0.0
    latency: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "noop_rate", "timeout_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name} must be between 0 and 1, got {value}")
        if self.error_rate + self.noop_rate + self.timeout_rate > 1.0:
            raise ValueError("fault rates add up to more than 1")
        if self.latency < 0:
            raise ValueError("latency must not be negative")

    @classmethod
    def acceptance(cls, seed: int = 0, latency: float = 0.0) -> FaultSpec:
        """The mix the issue asks for: 10% errors, 5% silent no-ops, 2% timeouts."""
        return cls(error_rate=0.10, noop_rate=0.05, timeout_rate=0.02, latency=latency, seed=seed)

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.noop_rate > 0 or self.timeout_rate > 0


class FaultInjector:
    """Thread-safe per-request fault decisions; counts what it injected for the report."""

    def __init__(self, spec: FaultSpec | None = None) -> None:
        self.spec = spec or FaultSpec()
        self._rng = random.Random(self.spec.seed)
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {f.value: 0 for f in Fault}
        self.requests = 0
        self.replies = 0

    def decide(self, mutating: bool) -> Fault:
        """The fault for one request. Read-only requests are never "no-ops" (nothing to skip)."""
        with self._lock:
            self.requests += 1
            if not self.spec.active:
                self.counts[Fault.NONE.value] += 1
                return Fault.NONE
            roll = self._rng.random()
            s = self.spec
            if roll < s.error_rate:
                fault = Fault.ERROR
            elif roll < s.error_rate + s.timeout_rate:
                fault = Fault.TIMEOUT
            elif mutating and roll < s.error_rate + s.timeout_rate + s.noop_rate:
                fault = Fault.NOOP
            else:
                fault = Fault.NONE
            self.counts[fault.value] += 1
            return fault

    def count_request(self) -> None:
        """Count a request that is not subject to faults (session set-up, discovery)."""
        with self._lock:
            self.requests += 1

    def count_reply(self) -> None:
        """Count one answer sent on the wire (IPMI: every datagram, session set-up included),
        so a benchmark sees the round trips a client really paid, not only the commands."""
        with self._lock:
            self.replies += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "replies": self.replies, **self.counts}
