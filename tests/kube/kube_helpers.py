"""Helpers for the kube stand-in tests: raw HTTPS requests (to see status codes, headers and Status
bodies exactly) and kubectl runs."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from typing import Any
from urllib.parse import urlsplit

from provisioner.lab.kube.host import KubeHost, KubePaths, client_ssl

KUBECTL = "/usr/bin/kubectl"


class Raw:
    """One HTTPS connection per request, with the admin client certificate."""

    def __init__(self, host: KubeHost, ctx: ssl.SSLContext | None = None) -> None:
        url = urlsplit(host.server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.ctx = ctx or client_ssl(KubePaths(host.root))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        try:
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            hdrs = {"Content-Type": content_type, **(headers or {})}
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            heads = {k.lower(): v for k, v in resp.getheaders()}
            try:
                doc = json.loads(payload) if payload else None
            except ValueError:
                doc = payload.decode(errors="replace")
            return resp.status, heads, doc
        finally:
            conn.close()

    def stream_lines(self, path: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """A watch read to its end (the server closes it at ``timeoutSeconds``)."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]
        finally:
            conn.close()


def kubectl(
    host: KubeHost, *args: str, input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(host.kubeconfig), *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
    )
