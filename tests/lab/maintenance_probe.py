"""Run inside the lab namespace: wait until each node answers Version in maintenance mode.

Usage: python maintenance_probe.py DEADLINE_SECONDS NAME=IP[@POWER_ON_EPOCH] ...
Prints one JSON object: name -> {seconds (since power-on), tag, mode} or {error}.
Uses the tool's own Talos API client (provisioner.talosapi), server-only TLS as Talos's
maintenance mode requires.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from provisioner.talosapi.client import TalosClient


async def wait_one(ip: str, since: float, deadline: float) -> dict[str, Any]:
    last = "no attempt"
    while time.time() < deadline:
        try:
            async with TalosClient.maintenance(ip) as client:
                v = await client.version()
            return {
                "seconds": round(time.time() - since, 1),
                "tag": v.tag,
                "mode": v.platform_mode,
                "hostname": v.hostname,
            }
        except Exception as exc:  # not up yet: keep polling until the deadline
            last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(1.0)
    return {"error": last}


async def main(argv: list[str]) -> dict[str, Any]:
    deadline = time.time() + float(argv[0])
    names, jobs = [], []
    for arg in argv[1:]:
        name, _, rest = arg.partition("=")
        ip, _, since = rest.partition("@")
        names.append(name)
        jobs.append(wait_one(ip, float(since) if since else time.time(), deadline))
    return dict(zip(names, await asyncio.gather(*jobs), strict=True))


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
