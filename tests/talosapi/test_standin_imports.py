"""apid must run in the stand-in image: only grpclib/h2/multidict/protobuf(pure Python)/cryptography there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter where every host-only library is made unimportable.
SCRIPT = r"""
import asyncio, importlib.abc, sys

BLOCKED = {"yaml", "tenacity", "pydantic", "click", "jinja2", "rich", "netaddr", "grpc", "grpc_tools",
           "paramiko"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in the stand-in image")
        return None

sys.meta_path.insert(0, Block())
from google.protobuf.internal import api_implementation
assert api_implementation.Type() == "python", api_implementation.Type()

from provisioner.lab.standin import apid, backend

class Node:
    def hostname(self): return "n1"
    def disks(self): return ["/dev/vda"]
    def version(self): return backend.VersionInfo(tag="v1.11.6-standin")

async def main():
    running = await apid.serve_maintenance("127.0.0.1", 0, Node())
    await running.stop()

asyncio.run(main())
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_apid_starts_without_host_only_libraries_and_with_pure_python_protobuf() -> None:
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "PYTHONPATH": str(REPO), "PATH": "/usr/bin"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "talos stand-in: maintenance mode" in proc.stdout
    assert "SPKI sha256 fingerprint" in proc.stdout
    assert proc.stdout.strip().endswith("ok []")
