"""The one fault spec of the Kubernetes stand-in and the Cozystack simulator.

``seed=N,api500=0.05,reset=0.02,stall-watch=0.1,stuck=<release>[;<release>],fail=<release>[;...]``

- ``api500``: probability that a resource request is answered 500 InternalError (server);
- ``reset``: probability that a resource request's connection is dropped without an answer (server);
- ``stall-watch``: probability that a watch stops delivering events but stays open (server);
- ``stuck``: HelmReleases held ``Ready=False`` (``RetriesExceeded``) until nudged (simulator);
- ``fail``: HelmReleases that fail for good (simulator).

Release names are ``name`` or ``namespace/name``. One parser for both processes, so a spec means the
same thing everywhere; decisions come from ``random.Random(seed)`` so a failing run can be replayed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RATE_KEYS = {"api500": "api500", "reset": "reset", "stall-watch": "stall_watch"}
LIST_KEYS = {"stuck": "stuck", "fail": "fail"}
KNOWN = ("seed", *RATE_KEYS, *LIST_KEYS)


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message names the offending key or value."""


@dataclass(frozen=True)
class KubeFaults:
    """Parsed fault spec. Rates are probabilities per request (or per watch)."""

    seed: int = 0
    api500: float = 0.0
    reset: float = 0.0
    stall_watch: float = 0.0
    stuck: tuple[str, ...] = ()
    fail: tuple[str, ...] = ()

    @property
    def any_server_faults(self) -> bool:
        return bool(self.api500 or self.reset or self.stall_watch)

    def rng(self, salt: str = "") -> random.Random:
        """A seeded generator; ``salt`` gives each process or component its own sequence."""
        return random.Random(f"{self.seed}:{salt}")

    def matches(self, names: tuple[str, ...], namespace: str, name: str) -> bool:
        """Whether release ``namespace/name`` is listed (as ``name`` or ``namespace/name``)."""
        return name in names or f"{namespace}/{name}" in names

    def is_stuck(self, namespace: str, name: str) -> bool:
        return self.matches(self.stuck, namespace, name)

    def is_failed(self, namespace: str, name: str) -> bool:
        return self.matches(self.fail, namespace, name)

    def to_text(self) -> str:
        """The spec back as text (round-trips through ``parse_faults``), for a child process."""
        parts = [f"seed={self.seed}"]
        for key, attr in RATE_KEYS.items():
            if getattr(self, attr):
                parts.append(f"{key}={getattr(self, attr)}")
        for key, attr in LIST_KEYS.items():
            if getattr(self, attr):
                parts.append(f"{key}={';'.join(getattr(self, attr))}")
        return ",".join(parts)


def parse_faults(text: str | None) -> KubeFaults:
    """Parse a fault spec; an empty or missing spec means no faults. Raises FaultSpecError."""
    if not text or not text.strip():
        return KubeFaults()
    values: dict[str, object] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise FaultSpecError(f"fault spec: {part!r} needs a value (key=value)")
        if key not in KNOWN:
            raise FaultSpecError(f"fault spec: unknown key {key!r} (known: {', '.join(KNOWN)})")
        if key == "seed":
            try:
                values["seed"] = int(value)
            except ValueError:
                raise FaultSpecError(f"fault spec: seed={value!r} is not an integer") from None
        elif key in RATE_KEYS:
            try:
                rate = float(value)
            except ValueError:
                raise FaultSpecError(f"fault spec: {key}={value!r} is not a number") from None
            if not 0.0 <= rate <= 1.0:
                raise FaultSpecError(f"fault spec: {key}={value} must be between 0 and 1")
            values[RATE_KEYS[key]] = rate
        else:
            names = tuple(n.strip() for n in value.split(";") if n.strip())
            if not names:
                raise FaultSpecError(f"fault spec: {key}= needs at least one release name")
            values[LIST_KEYS[key]] = names
    return KubeFaults(**values)  # type: ignore[arg-type]
