"""Stage spans from the event log: boundaries, failures, resets, runs in progress, medians."""

from __future__ import annotations

from typing import Any

from provisioner.events import Event
from provisioner.report.timeline import build


class Log:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, t: float, kind: str, node: str | None = None, outcome: str = "ok", **data: Any) -> None:
        self.events.append(Event(len(self.events) + 1, t, kind, node, outcome, data))

    def step(self, t: float, node: str, phase: str, outcome: str = "ok", detail: str = "") -> None:
        self.add(t, "node.step", node, outcome, phase=phase, detail=detail)


def _full(log: Log, node: str, t: float, install: float = 50.0) -> float:
    log.step(t + 1, node, "powered-off")
    log.step(t + 2, node, "pxe-set")
    log.step(t + 3, node, "powered-on")
    log.add(t + 13, "ipxe.script", node, "install")
    log.add(t + 40, "config.fetch", node, "ok")
    log.step(t + 42, node, "config-delivered")
    log.step(t + 42 + install, node, "installed")
    log.step(t + 43 + install, node, "ready")
    return t + 43 + install


def test_stage_boundaries_come_from_the_proving_events() -> None:
    log = Log()
    log.add(100, "asset.download")
    _full(log, "cp1", 100)
    log.add(200, "cluster.step", step="bootstrap", detail="bootstrapping etcd on cp1")
    log.add(201, "cluster.step", step="etcd", detail="waiting for 1 voting etcd members")
    log.add(215, "cluster.step", step="etcd", detail="voting members: cp1")
    log.add(216, "cluster.step", step="kubeconfig")
    log.add(218, "cluster.step", step="formed")
    tl = build(log.events, ["cp1"], ["cp1"], now=10_000)
    spans = [(s.stage, s.start, s.end) for s in tl.nodes["cp1"].spans]
    assert spans == [
        ("power-off", 100, 101),
        ("pxe", 101, 113),  # ends when the iPXE install script was served, not at power-on
        ("config", 113, 140),  # the config fetch, not up noticing it two seconds later
        ("installed", 140, 192),
        ("etcd", 192, 215),  # the first voting-member list naming cp1
    ]
    assert [(s.stage, s.start, s.end) for s in tl.cluster] == [
        ("bootstrap", 200, 201),
        ("etcd", 201, 216),
        ("kubeconfig", 216, 218),
        ("formed", 218, 218),
    ]
    assert tl.end == 218  # a finished run: the chart ends with the log, not at "now"


def test_failure_ends_the_running_stage_and_a_rerun_clears_it() -> None:
    log = Log()
    log.step(1, "w1", "powered-off")
    log.step(2, "w1", "pxe-set")
    log.step(3, "w1", "powered-on")
    log.step(1203, "w1", "powered-on", "error", "did not boot within 600s after 2 power cycle(s)")
    tl = build(log.events, ["w1"], [], now=5000)
    last = tl.nodes["w1"].spans[-1]
    assert (last.stage, last.failed, last.end) == ("pxe", True, 1203)
    assert tl.nodes["w1"].failed_at == 1203
    # A rerun moves the node on: no longer failed.
    log.step(1300, "w1", "powered-off")
    tl = build(log.events, ["w1"], [], now=5000)
    assert tl.nodes["w1"].failed_at is None


def test_a_reset_starts_the_node_over() -> None:
    log = Log()
    _full(log, "w1", 0)
    log.add(500, "node.reset", "w1")
    log.step(510, "w1", "powered-off")
    tl = build(log.events, ["w1"], [], now=520)
    spans = tl.nodes["w1"].spans
    assert spans[0].start == 500 and spans[0].end == 510
    assert spans[1].stage == "pxe" and spans[1].running


def test_without_netboot_events_pxe_ends_at_power_on_only_once_the_node_booted() -> None:
    log = Log()
    log.step(1, "a", "powered-off")
    log.step(2, "a", "pxe-set")
    log.step(3, "a", "powered-on")
    log.step(30, "a", "config-delivered")  # config applied over the maintenance API
    log.step(1, "b", "powered-off")
    log.step(3, "b", "powered-on")
    tl = build(log.events, ["a", "b"], [], now=60)
    a = {s.stage: s for s in tl.nodes["a"].spans}
    assert (a["pxe"].end, a["config"].end) == (3, 30)
    b = tl.nodes["b"].spans[-1]
    assert b.stage == "pxe" and b.running and b.end == 60  # still booting, as far as anyone knows


def test_medians_outliers_and_the_slowest_nodes() -> None:
    log = Log()
    for i in range(20):
        _full(log, f"n{i:02d}", 0, install=300.0 if i == 7 else 50.0 + i % 3)
    tl = build(log.events, [f"n{i:02d}" for i in range(20)], [], now=10_000)
    assert tl.medians["installed"] == 53.0  # from the config fetch (+40 s) to installed (+42 s + install)
    assert tl.outliers == {("n07", "installed")}
    assert tl.slowest == ["n07"]


def test_events_of_nodes_outside_the_site_are_ignored() -> None:
    log = Log()
    _full(log, "ghost", 0)
    log.add(5, "ipxe.unknown-machine", None, "unknown")
    tl = build(log.events, ["cp1"], ["cp1"], now=100)
    assert tl.nodes == {}


def test_platform_stages_from_stage_events() -> None:
    log = Log()
    log.add(10, "pipeline.stage", None, stage="api-ready", status="running")
    log.add(20, "pipeline.stage", None, stage="api-ready", status="done")
    log.add(21, "pipeline.stage", None, stage="helmreleases", status="running")
    log.add(90, "pipeline.stage", None, "error", stage="helmreleases", status="failed")
    log.add(91, "pipeline.stage", None, stage="storage", status="running")
    tl = build(log.events, [], [], now=100)
    got = [(s.stage, s.start, s.end, s.failed, s.running) for s in tl.platform]
    assert got[:2] == [("api-ready", 10, 20, False, False), ("helmreleases", 21, 90, True, False)]
    assert got[2][0] == "storage" and got[2][4]


def test_a_node_barely_slower_than_the_others_is_not_marked_slow() -> None:
    log = Log()
    for i, install in enumerate((50.0, 52.0, 55.0, 60.0)):
        _full(log, f"n{i}", 0, install=install)
    tl = build(log.events, [f"n{i}" for i in range(4)], [], now=10_000)
    assert tl.slowest == []
    assert tl.outliers == set()
