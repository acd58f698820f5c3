"""The bundle's HelmRelease dependency graph and each release's state.

Before the platform stage has run, the graph comes from the bundle's release list
(``provisioner/cozystack/upstream/bundles/<bundle>.yaml``) and every release is "not
started". Once the ``helmreleases`` stage record exists, its states colour the graph. The
point of the picture is the question "which release holds up the others": every failed
release carries the set of releases that wait on it, directly or through others.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "cozystack" / "upstream" / "bundles"
HELMRELEASES_STAGE = "helmreleases"
# Ready=False for one of these reasons means "waiting", not "broken".
_WAITING_REASONS = {"DependencyNotReady", "Progressing", "ReconciliationInProgress", ""}
STATES = ("ready", "progressing", "blocked", "failed", "not-started")


@dataclass
class Release:
    key: str  # "<namespace>/<name>"
    depends: list[str]
    optional: bool = False
    state: str = "not-started"
    reason: str = ""
    message: str = ""
    blocked_by: str | None = None
    holds: set[str] = field(default_factory=set)  # failed releases: every release waiting on it

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]


@dataclass
class PlatformView:
    bundle: str
    releases: dict[str, Release]
    from_record: bool
    updated: float | None = None
    problem: str | None = None  # a bundle list that could not be read

    def depth(self) -> dict[str, int]:
        """Longest dependsOn chain below each release: its column in the graph."""
        depth: dict[str, int] = {}
        for key in self.releases:
            stack = [(key, False)]
            while stack:  # iterative, with a guard against a dependency cycle in bad data
                cur, expanded = stack.pop()
                if cur in depth:
                    continue
                deps = [d for d in self.releases[cur].depends if d in self.releases]
                if expanded or not deps:
                    depth[cur] = 1 + max((depth.get(d, 0) for d in deps), default=-1)
                    continue
                stack.append((cur, True))
                stack.extend((d, False) for d in deps if d not in depth and d != cur)
                if len(stack) > 10 * len(self.releases) + 10:
                    raise InputError(f"bundle {self.bundle}: dependsOn has a cycle around {cur}")
        return depth

    def blocked(self) -> set[str]:
        return {k for r in self.releases.values() for k in r.holds}


def bundle_releases(
    bundle: str, enable: tuple[str, ...] = (), disable: tuple[str, ...] = ()
) -> dict[str, Release]:
    """The releases a default install of ``bundle`` creates, plus the optional ones enabled."""
    entries = _bundle_entries(bundle)
    namespace_of = {str(e["name"]): str(e["namespace"]) for e in entries if isinstance(e, dict)}
    out: dict[str, Release] = {}
    for e in entries:
        name = str(e["name"])
        if e.get("disabled") or name in disable or (e.get("optional") and name not in enable):
            continue
        deps = [f"{namespace_of[d]}/{d}" for d in e.get("dependsOn") or [] if d in namespace_of]
        out[f"{e['namespace']}/{name}"] = Release(f"{e['namespace']}/{name}", deps, bool(e.get("optional")))
    for rel in out.values():  # a dependency the install never creates is not drawn
        rel.depends = [d for d in rel.depends if d in out]
    return out


@functools.lru_cache(maxsize=8)
def _bundle_entries(bundle: str) -> list[dict[str, Any]]:
    """The bundle's release list, parsed once per process (the served page rebuilds often)."""
    path = BUNDLES_DIR / f"{bundle}.yaml"
    try:
        # libyaml's loader when PyYAML has it: the pure-Python one costs ~0.3 s per bundle.
        entries = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the bundle's release list: {exc.strerror}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise InputError(f"{path}: expected a list of releases, each with a name")
    return entries


def load(
    record_path: Path, bundle: str, enable: tuple[str, ...] = (), disable: tuple[str, ...] = ()
) -> PlatformView:
    """The graph of ``bundle``, coloured by the helmreleases stage record when it exists.

    Raises InputError naming the file and field when the record is malformed."""
    releases = bundle_releases(bundle, enable, disable)
    try:
        text = record_path.read_text()
    except FileNotFoundError:
        return PlatformView(bundle, releases, from_record=False)
    except OSError as exc:
        raise InputError(f"{record_path}: cannot read: {exc.strerror}") from None
    raw = _parse_record(record_path, text)
    recorded: dict[str, Any] = raw["releases"]
    for key, entry in recorded.items():
        rel = releases.get(key)
        if rel is None:
            rel = releases[key] = Release(key, [])
        rel.depends = [d for d in entry.get("dependsOn", rel.depends)]
        ready = entry.get("ready")
        rel.reason = str(entry.get("reason") or "")
        rel.message = str(entry.get("message") or "")
        rel.blocked_by = entry.get("blockedBy")
        rel.state = _state(ready, rel.reason, rel.blocked_by)
    for rel in releases.values():
        rel.depends = [d for d in rel.depends if d in releases]
    view = PlatformView(raw.get("bundle") or bundle, releases, from_record=True, updated=raw.get("updated"))
    _mark_holds(view)
    return view


def _state(ready: bool | None, reason: str, blocked_by: str | None) -> str:
    """The colour of a release: Ready=True is ready; a release waiting on a dependency is
    blocked; Ready=False for any other reason than waiting is failed; the rest is under way
    (the platform stage writes ``NotCreated`` for a HelmRelease not created yet)."""
    if ready is True:
        return "ready"
    if ready is None and reason == "NotCreated":
        return "not-started"
    if blocked_by or reason == "DependencyNotReady":
        return "blocked"
    if ready is None or reason in _WAITING_REASONS:
        return "progressing"
    return "failed"


def _parse_record(path: Path, text: str) -> dict[str, Any]:
    where = path.name
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("releases"), dict):
        raise InputError(f"{path}: releases: expected an object of '<namespace>/<name>': state")
    if raw.get("updated") is not None and not isinstance(raw["updated"], int | float):
        raise InputError(f"{path}: updated: expected a number (epoch seconds)")
    for key, entry in raw["releases"].items():
        field_ = f"{where}: releases.{key}"
        if "/" not in key:
            raise InputError(f"{path}: releases.{key}: expected a '<namespace>/<name>' key")
        if not isinstance(entry, dict):
            raise InputError(f"{field_}: expected an object")
        if entry.get("ready") not in (True, False, None):
            raise InputError(f"{path}: releases.{key}.ready: expected true, false or null")
        deps = entry.get("dependsOn", [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise InputError(f"{path}: releases.{key}.dependsOn: expected a list of '<namespace>/<name>'")
        blocked = entry.get("blockedBy")
        if blocked is not None and not isinstance(blocked, str):
            raise InputError(f"{path}: releases.{key}.blockedBy: expected '<namespace>/<name>' or null")
        for text_field in ("reason", "message"):
            if entry.get(text_field) is not None and not isinstance(entry[text_field], str):
                raise InputError(f"{path}: releases.{key}.{text_field}: expected a string")
    return raw


def _mark_holds(view: PlatformView) -> None:
    """For each failed release, every release that waits on it, directly or transitively."""
    dependents: dict[str, list[str]] = {k: [] for k in view.releases}
    for rel in view.releases.values():
        for dep in rel.depends:
            dependents[dep].append(rel.key)
    for rel in view.releases.values():
        if rel.state != "failed":
            continue
        seen: set[str] = set()
        stack = list(dependents[rel.key])
        while stack:
            cur = stack.pop()
            if cur in seen or view.releases[cur].state == "ready":
                continue
            seen.add(cur)
            stack.extend(dependents[cur])
        rel.holds = seen
