"""``python -m provisioner.lab.kube.probe KUBECONFIG COUNT``: time a list of COUNT HelmReleases.

Run inside the lab's namespace (the VIP lives there) by the lab test and ``make bench-kube-lab``:
creates the HelmRelease CRD and COUNT HelmReleases if missing (one keep-alive HTTPS connection,
the kubeconfig's admin certificate), then lists them three times and prints JSON
``{"count": N, "seconds": best, "bytes": size}``. Standard library plus PyYAML only.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

NS = "bench-lab"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "helmreleases.helm.toolkit.fluxcd.io"},
    "spec": {
        "group": "helm.toolkit.fluxcd.io",
        "scope": "Namespaced",
        "names": {"plural": "helmreleases", "singular": "helmrelease", "kind": "HelmRelease"},
        "versions": [{"name": "v2", "served": True, "storage": True, "subresources": {"status": {}}}],
    },
}


def connect(kubeconfig: Path) -> http.client.HTTPSConnection:
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    tmp = Path(tempfile.mkdtemp(prefix="kube-probe-"))
    for name, data in (
        ("ca.crt", cluster["certificate-authority-data"]),
        ("c.crt", user["client-certificate-data"]),
        ("c.key", user["client-key-data"]),
    ):
        fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64decode(data))
    ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    ctx.load_cert_chain(str(tmp / "c.crt"), str(tmp / "c.key"))
    url = urllib.parse.urlsplit(cluster["server"])
    return http.client.HTTPSConnection(url.hostname or "", url.port or 443, context=ctx, timeout=60)


def call(conn: http.client.HTTPSConnection, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def main(argv: list[str]) -> int:
    kubeconfig, count = Path(argv[0]), int(argv[1])
    conn = connect(kubeconfig)
    call(conn, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    call(conn, "POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    base = f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/{NS}/helmreleases"
    for i in range(count):
        hr = {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {
                "name": f"release-{i:03d}",
                "namespace": NS,
                "labels": {"cozystack.io/system-app": "true"},
            },
            "spec": {
                "interval": "5m",
                "chart": {
                    "spec": {
                        "chart": f"cozy-{i:03d}",
                        "sourceRef": {"kind": "HelmRepository", "name": "cozystack-system"},
                    }
                },
                "dependsOn": [{"name": f"release-{max(i - 1, 0):03d}"}],
                "values": {"replicas": 2},
            },
        }
        code, _ = call(conn, "POST", base, hr)
        if code not in (201, 409):
            print(json.dumps({"error": f"create {i}: HTTP {code}"}))
            return 1
    best, size = float("inf"), 0
    for _ in range(3):
        t = time.perf_counter()
        code, body = call(conn, "GET", base)
        best = min(best, time.perf_counter() - t)
        if code != 200 or len(json.loads(body)["items"]) != count:
            print(json.dumps({"error": f"list: HTTP {code}"}))
            return 1
        size = len(body)
    print(json.dumps({"count": count, "seconds": round(best, 3), "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
