"""Benchmark: one poll for a node's new events against a 200,000-line event log.

``up`` polls the event log for every node several times a second (has this node fetched
its config yet?). Re-reading the whole log per poll cost 248 ms at 20,000 lines; the
incremental ``EventLog`` reads only the bytes appended since its last look and answers
from an in-memory index, so a poll must not depend on the log's size.

Setup: a log of 200,000 lines about 1,000 nodes (written directly, like a long run would
have left it), opened by a fresh ``EventLog`` (the one-off index build is printed). Then
rounds of: another writer appends one event about a random node (untimed, a real
``append`` from a second ``EventLog``), and the reader polls a random node with
``iter(since, node=...)`` + ``latest(node)`` (timed). Half the polls find a new line.

Comparison: an absolute budget, not a ratio: the median poll takes < 1 ms (the p99 and the
cost of one full re-read, what the old reader did per poll, are printed for context).
Exits 1 when missed.

Usage: python benchmarks/bench_events.py [--lines N] [--nodes K] [--polls P]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioner.events import EventLog, parse_event  # noqa: E402

TARGET_MS = 1.0
KINDS = ("dhcp.lease", "ipxe.script", "asset.download", "config.fetch", "node.step")


def write_log(path: Path, lines: int, nodes: int) -> None:
    rng = random.Random(7)
    t0 = 1_700_000_000.0
    with open(path, "w") as fh:
        for i in range(1, lines + 1):
            node = f"r{rng.randrange(nodes) // 40:02d}-n{rng.randrange(nodes):04d}"
            kind = KINDS[i % len(KINDS)]
            data = {"ip": f"10.20.{i % 250}.{i % 200}", "mac": f"52:54:00:{i % 256:02x}:00:01", "step": i}
            fh.write(
                json.dumps(
                    {"data": data, "id": i, "kind": kind, "node": node, "outcome": "ok", "time": t0 + i},
                    sort_keys=True,
                    separators=(",", ":"),
                )
                + "\n"
            )


def full_reread(path: Path) -> float:
    """What the old reader paid per poll: parse every line of the file."""
    t = time.perf_counter()
    with open(path, "rb") as fh:
        for line in fh:
            parse_event(line)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--polls", type=int, default=2000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        write_log(path, args.lines, args.nodes)
        size_mb = path.stat().st_size / 1e6
        reread = full_reread(path)

        reader, writer = EventLog(path), EventLog(path)
        t = time.perf_counter()
        last = reader.last_id()
        build = time.perf_counter() - t
        assert last == args.lines, f"index holds {last} events, expected {args.lines}"

        rng = random.Random(11)
        names = sorted({e.node for e in reader.iter(args.lines - 5000) if e.node})
        cursors = {n: last for n in names}  # like up: each node waits for events after its record
        timings: list[float] = []
        found = 0
        for i in range(args.polls):
            node = rng.choice(names)
            if i % 2 == 0:  # half the polls have something new to find
                writer.append("config.fetch", rng.choice(names), bytes=1234)
            t = time.perf_counter()
            new = list(reader.iter(cursors[node], node=node))
            latest = reader.latest(node)
            timings.append(time.perf_counter() - t)
            if new:
                cursors[node] = new[-1].id
                found += 1
            assert latest is not None and latest.node == node

        # Correctness: the reader's index agrees with the file.
        assert reader.last_id() == args.lines + args.polls // 2

    median_ms = statistics.median(timings) * 1000
    p99_ms = sorted(timings)[int(len(timings) * 0.99)] * 1000
    print(f"log: {args.lines} lines, {size_mb:.1f} MB, {args.nodes} nodes")
    print(f"index build (once per process): {build:.2f} s")
    print(f"old reader, one full re-read per poll: {reread * 1000:.0f} ms")
    print(f"polls: {len(timings)} ({found} found new events); p99 {p99_ms:.3f} ms")
    ok = median_ms < TARGET_MS
    print(f"bench-events: {median_ms:.3f} ms median poll at {args.lines} lines (target < {TARGET_MS:g} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
