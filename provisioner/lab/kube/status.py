"""Kubernetes ``Status`` error bodies: every error the stand-in returns is one, as clients expect."""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class ApiError(Exception):
    """An error answer: HTTP ``code``, Status ``reason``, ``message`` and optional ``details``."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or REASONS.get(code, "Unknown")
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out


def not_found(group_resource: str, name: str, kind_plural: str) -> ApiError:
    return ApiError(
        404,
        f'{group_resource} "{name}" not found',
        "NotFound",
        {"name": name, "group": group_resource.partition(".")[2], "kind": kind_plural},
    )


def already_exists(group_resource: str, name: str, kind_plural: str) -> ApiError:
    return ApiError(
        409,
        f'{group_resource} "{name}" already exists',
        "AlreadyExists",
        {"name": name, "group": group_resource.partition(".")[2], "kind": kind_plural},
    )


def conflict(group_resource: str, name: str, kind_plural: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {group_resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "Conflict",
        {"name": name, "group": group_resource.partition(".")[2], "kind": kind_plural},
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; ``causes`` is [(field, reason type, message)]."""
    text = "; ".join(f"{f}: {m}" for f, _, m in causes)
    return ApiError(
        422,
        f'{kind}.{group} "{name}" is invalid: {text}' if group else f'{kind} "{name}" is invalid: {text}',
        "Invalid",
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": t, "message": m, "field": f} for f, t, m in causes],
        },
    )
