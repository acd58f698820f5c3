"""The fleet harness's memory figure counts `up`'s workers: their private memory is added to
`up`'s RSS (a child's RSS alone would be left out of `up`'s rusage)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from provisioner.lab.fleet.harness import GroupMemory, _kb

PARENT = """
import subprocess, sys, time
code = (
    "b = bytearray(48 * 2**20); b[::4096] = b'x' * (len(b) // 4096); "
    "print('ready', flush=True); import time; time.sleep(30)"
)
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
child.stdout.readline()
print('ready', flush=True)
time.sleep(30)
"""


def test_a_childs_private_memory_is_added_to_the_parents_rss() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        memory = GroupMemory(proc.pid, interval=0.05)
        time.sleep(0.3)
        peak_mb = memory.stop()
        parent_mb = _kb(Path(f"/proc/{proc.pid}/status").read_text(), "VmRSS:") / 1024
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its child
        proc.wait()
    # the child's 48 MiB buffer, every page touched, is in the figure beside the parent's RSS
    assert peak_mb >= parent_mb + 45, (peak_mb, parent_mb)
