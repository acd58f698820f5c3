"""ipmitool, the independent IPMI client the tests confirm BMC state with.

One wrapper for every test that asks it: the password travels in the environment
(``-E``), never on the command line where ``ps`` would show it; ``prefix`` runs it
somewhere else (``ip netns exec <ns>`` for the lab).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence


def ipmitool(
    address: str, port: int, username: str, password: str, *args: str, prefix: Sequence[str] = ()
) -> str:
    argv = [
        "ipmitool",
        "-I",
        "lanplus",
        "-C",
        "3",
        "-H",
        address,
        "-p",
        str(port),
        "-U",
        username,
        "-E",
        *args,
    ]
    res = subprocess.run(
        [*prefix, *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "IPMI_PASSWORD": password},
    )
    if res.returncode != 0:
        raise AssertionError(f"ipmitool {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout
