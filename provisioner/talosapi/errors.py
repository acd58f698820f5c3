"""Errors of the Talos API client: every message names the endpoint and the RPC, never secret material.

``TalosApiError`` is an ``OperationError`` (exit 1: acting on the site failed); ``grpc_status`` keeps
the gRPC status name (or None for transport failures) so workflows can tell "refused" from "down".
"""

from __future__ import annotations

from ..errors import OperationError


class TalosApiError(OperationError):
    """A machine API call failed after its retries."""

    def __init__(self, endpoint: str, rpc: str, detail: str, grpc_status: str | None = None) -> None:
        self.endpoint = endpoint
        self.rpc = rpc
        self.detail = detail
        self.grpc_status = grpc_status
        status = f" [{grpc_status}]" if grpc_status else ""
        super().__init__(f"Talos API {rpc} on {endpoint}{status}: {detail}")


class TalosUnavailable(TalosApiError):
    """The node did not answer (connection refused/reset, UNAVAILABLE, deadline): may succeed later."""


class TalosRefused(TalosApiError):
    """The node answered and said no (INVALID_ARGUMENT, PERMISSION_DENIED, ...): retrying will not help."""


class TalosTLSError(TalosApiError):
    """The TLS handshake failed or the server's identity did not match (CA, hostname, SPKI pin)."""
