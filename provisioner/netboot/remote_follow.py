"""The boot server's end of the live link `up` keeps open (stdlib only; runs in the agent zip).

``python3 -m provisioner.netboot.remote_agent --dir DIR follow --offset N --after ID`` runs for
as long as the SSH session that started it:

- **out** (stdout): every complete line of the agent's ``events.jsonl`` from byte ``offset`` on
  whose id is above ``after``, as ``{"end": <offset after the line>, "event": {...}}``, as soon
  as it is written. The tool keeps ``end`` and the id in its cursor, so a dropped session is
  resumed exactly where it stopped: no event twice, none lost;
- **in** (stdin): node-state changes, one JSON object a line (``{"node": "w1", "installed":
  true}``), written at once to ``node-states.json``, which the serving agent reads on each
  request. An installed node is answered "boot from disk" without a re-push.

When stdin closes (the session ended) the follower sends what was written up to then and exits;
the agent keeps serving.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from ..fsutil import atomic_write
from ..layout import StateLayout

NODE_STATES = "node-states.json"
POLL = 0.2


def read_node_states(root: Path) -> dict[str, dict[str, Any]]:
    """The node states the tool sent (``{}`` when none or unreadable: the manifest rules)."""
    try:
        raw = json.loads((root / NODE_STATES).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _apply(root: Path, lock: threading.Lock, line: str) -> None:
    try:
        change = json.loads(line)
        name = str(change["node"])
    except (ValueError, KeyError, TypeError):
        return
    with lock:
        states = read_node_states(root)
        states[name] = {**states.get(name, {}), **{k: v for k, v in change.items() if k != "node"}}
        atomic_write(root / NODE_STATES, json.dumps(states, sort_keys=True) + "\n", mode=0o600)


def _read_changes(root: Path, stdin: TextIO, done: threading.Event) -> None:
    lock = threading.Lock()
    for line in stdin:
        if line.strip():
            _apply(root, lock, line)
    done.set()  # the session is gone


def follow(root: Path, offset: int, after: int, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """Stream events until stdin closes; node-state changes from stdin go to ``node-states.json``."""
    done = threading.Event()
    threading.Thread(target=_read_changes, args=(root, stdin, done), daemon=True).start()
    path = StateLayout(root).events
    inode = None
    while True:
        finished = done.is_set()  # read first: the pass below still sends what came before the end
        try:
            st = path.stat()
        except FileNotFoundError:
            if finished:
                break
            time.sleep(POLL)
            continue
        if (inode is not None and st.st_ino != inode) or st.st_size < offset:
            offset = 0  # the log was replaced: start over (ids still filter what was sent)
        inode = st.st_ino
        if st.st_size > offset:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(st.st_size - offset)
            end = chunk.rfind(b"\n") + 1  # complete lines only
            pos = offset
            for line in chunk[:end].splitlines(keepends=True):
                pos += len(line)
                try:
                    event = json.loads(line)
                    rid = int(event["id"])
                except (ValueError, KeyError, TypeError):
                    continue
                if rid <= after:
                    continue
                out.write(json.dumps({"end": pos, "event": event}, sort_keys=True) + "\n")
                after = rid
            out.flush()
            offset += end
        if finished:
            break
        time.sleep(POLL)
    return 0
