"""``python -m provisioner.lab.kube serve ...``: run the API server stand-in in this process.
``python -m provisioner.lab.kube wait-nodes --kubeconfig K --count N``: wait until kubectl (the
machine's, an independent client) lists N Nodes, then print ``kubectl get nodes`` (``make up`` ends so).

Started by ``provisioner lab kube up`` (host mode) and by the lab's control planes. Bad arguments
exit 2 with a message naming the option; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from .faults import FaultSpecError, parse_faults
from .server import ServerSettings, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provisioner.lab.kube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the Kubernetes API stand-in")
    s.add_argument("--etcd", required=True, help="etcd client URL, http://host:port")
    s.add_argument("--cert", required=True, type=Path)
    s.add_argument("--key", required=True, type=Path)
    s.add_argument("--ca", required=True, type=Path, help="CA that client certificates must chain to")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=6443)
    s.add_argument("--port-file", type=Path)
    s.add_argument("--kubernetes-version", default="v1.34.1")
    s.add_argument("--faults", default="")
    s.add_argument("--bookmark-interval", type=float, default=5.0)
    s.add_argument("--token-file", type=Path, help="bearer tokens accepted besides certificates, one a line")
    s.add_argument("--root", help="host-mode directory (recorded in the command line so `down` knows us)")
    w = sub.add_parser("wait-nodes", help="wait until kubectl lists COUNT Nodes, then print them")
    w.add_argument("--kubeconfig", required=True, type=Path)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.command == "wait-nodes":
        if not args.kubeconfig.is_file():
            parser.exit(2, f"error: --kubeconfig: {args.kubeconfig} is not a file\n")
        return wait_nodes(args.kubeconfig, args.count, args.timeout)
    try:
        faults = parse_faults(args.faults)
    except FaultSpecError as exc:
        parser.exit(2, f"error: --faults: {exc}\n")
    for opt in ("cert", "key", "ca"):
        if not getattr(args, opt).is_file():
            parser.exit(2, f"error: --{opt}: {getattr(args, opt)} is not a file\n")
    tokens: frozenset[str] = frozenset()
    if args.token_file is not None:
        try:
            tokens = frozenset(t.strip() for t in args.token_file.read_text().splitlines() if t.strip())
        except OSError as exc:
            parser.exit(2, f"error: --token-file: {exc.strerror}: {args.token_file}\n")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s kube stand-in %(levelname)s %(message)s")
    settings = ServerSettings(
        etcd=args.etcd,
        cert=args.cert,
        key=args.key,
        ca=args.ca,
        host=args.host,
        port=args.port,
        kubernetes_version=args.kubernetes_version,
        faults=faults,
        port_file=args.port_file,
        bookmark_interval=args.bookmark_interval,
        tokens=tokens,
    )
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        print(f"error: kube stand-in: {exc}", file=sys.stderr)
        return 1
    return 0


def wait_nodes(kubeconfig: Path, count: int, timeout: float) -> int:
    """Poll ``kubectl get nodes`` until ``count`` Nodes are listed; print the table; 1 on timeout."""
    import subprocess
    import time

    cmd = ["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=10s", "get", "nodes"]
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        res = subprocess.run([*cmd, "-o", "name"], capture_output=True, text=True)
        have = len(res.stdout.split()) if res.returncode == 0 else 0
        if have >= count or time.monotonic() > deadline:
            break
        if have != seen:
            print(f"waiting for {count} Nodes ({have} registered)", file=sys.stderr, flush=True)
            seen = have
        time.sleep(2)
    subprocess.run([*cmd, "-o", "wide"])
    if have < count:
        print(f"error: only {have} of {count} Nodes registered within {timeout:.0f}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
