"""Run a command so that it never outlives the tool: ``python -m ...childguard CMD...``.

``PR_SET_PDEATHSIG`` alone is not enough for dnsmasq: the kernel clears the parent-death
signal when a process changes credentials, and dnsmasq drops root for ``nobody``. So the
tool starts this small guard (which stays root and keeps the death signal), and the
guard runs the real command as its child: when the tool dies, even by SIGKILL, the guard
receives SIGTERM and takes the command down with it. Signals sent to the guard (TERM,
INT, HUP) are forwarded; its exit code is the command's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent thread exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    cmd = list(sys.argv[1:] if argv is None else argv)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        print("usage: python -m provisioner.netboot.childguard CMD [ARGS...]", file=sys.stderr)
        return 2
    parent = int(os.environ.get("PROVISIONER_GUARD_PARENT", "0"))
    die_with_parent()
    if parent and os.getppid() != parent:  # the tool died before prctl took effect
        return 1
    child = subprocess.Popen(cmd)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            return child.wait()
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main())
