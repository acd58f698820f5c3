"""Two network namespaces joined by a veth pair, created for one test and always deleted.

Names carry the pid and a counter so parallel runs never collide; every address used lives
inside these namespaces only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

_counter = itertools.count()


@dataclass(frozen=True)
class Pair:
    server_ns: str
    client_ns: str
    server_if: str
    client_if: str

    def server(self, *argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.server_ns, *argv, **kw)

    def client(self, *argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.client_ns, *argv, **kw)


def run(
    *argv: str, check: bool = True, timeout: float = 30, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


@contextlib.contextmanager
def netns_pair(server_cidr: str, client_mac: str) -> Iterator[Pair]:
    n = f"{os.getpid()}x{next(_counter)}"
    pair = Pair(f"pvnb-s-{n}", f"pvnb-c-{n}", f"vs{n}"[:15], f"vc{n}"[:15])
    created: list[str] = []
    try:
        for ns in (pair.server_ns, pair.client_ns):
            run("ip", "netns", "add", ns)
            created.append(ns)
        run(
            "ip",
            "link",
            "add",
            pair.server_if,
            "netns",
            pair.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            pair.client_if,
            "netns",
            pair.client_ns,
        )
        pair.server("ip", "link", "set", "lo", "up")
        pair.server("ip", "addr", "add", server_cidr, "dev", pair.server_if)
        pair.server("ip", "link", "set", pair.server_if, "up")
        pair.client("ip", "link", "set", "lo", "up")
        pair.client("ip", "link", "set", pair.client_if, "address", client_mac)
        pair.client("ip", "link", "set", pair.client_if, "up")
        yield pair
    finally:
        for ns in created:
            run("ip", "netns", "del", ns, check=False)


def set_client_mac(pair: Pair, mac: str) -> None:
    pair.client("ip", "link", "set", pair.client_if, "down")
    pair.client("ip", "link", "set", pair.client_if, "address", mac)
    pair.client("ip", "link", "set", pair.client_if, "up")
