"""The one place where errors become HTTP answers.

Every gRPC failure reaches the gateway as a `servicekit.errors` exception (the call wrapper translates the status
and its `google.rpc` details); `omni_error_handler` maps it to a status code following `google/rpc/code.proto`.
The other handlers make sure that no request, however malformed, gets an HTML page or a traceback: every error body
is JSON `{"detail": ..., "reason": ...}`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.app.api.deps import needs_api_key_and_lacks_it
from servicekit import errors

log = logging.getLogger(__name__)

_CHANNEL_REASON_PREFIXES = ("CHANNEL_", "EVOLUTION_")
"""Reasons of failures of a downstream channel gateway: those are 502 Bad Gateway, not our own fault."""

_STATUS_BY_CHANNEL_REASON = {
    "RECIPIENT_NOT_ON_WHATSAPP": 422,
    "CHANNEL_REQUEST_INVALID": 422,
    "CHANNEL_NOT_SUPPORTED": 422,
    "CHANNEL_RATE_LIMITED": 429,
    "CHANNEL_TIMEOUT": 504,
}
"""Channel failures that are not a plain 502: the caller's request was refused for what it asked (422: fix the
request, do not retry it), the account is throttled (429, Retry-After), or the channel did not confirm in time (504:
retry with the same Idempotency-Key, which never sends twice). Checked before the prefix rule."""

UPSTREAM_METADATA = "upstream"
"""ErrorInfo metadata naming the channel gateway (Evolution) that refused or could not be reached while the hub set an
instance up or acted on its connection (services/channels/core/connections.py)."""
_UPSTREAM_FAULTS = (errors.InvalidArgumentError, errors.FailedPreconditionError, errors.UnavailableError)
"""Errors that are the gateway's doing when they name it: 502 with the gateway's reason (the issue's "Evolution
failures → 502"), rather than 422/409/503 which would blame the request or the hub."""

_STATUS_BY_ERROR: tuple[tuple[type[errors.OmniError], int], ...] = (
    (errors.NotFoundError, 404),
    (errors.AlreadyExistsError, 409),
    (errors.InvalidArgumentError, 422),
    (errors.FailedPreconditionError, 409),
    (errors.PermissionDeniedError, 403),
    (errors.UnauthenticatedError, 401),
    (errors.UnavailableError, 503),
    (errors.DeadlineExceededError, 504),
    (errors.InternalError, 500),
)


def json_response(status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON error response; ASCII-escaped so that no input (even a lone surrogate) can break the encoding."""
    content = json.dumps(body, ensure_ascii=True, default=str, separators=(",", ":"))
    return Response(content=content, status_code=status_code, headers=headers, media_type="application/json")


def status_for(exc: errors.OmniError) -> int:
    """The HTTP status of a domain error."""
    channel_fault = isinstance(exc, errors.FailedPreconditionError | errors.UnavailableError)
    if channel_fault and exc.reason in _STATUS_BY_CHANNEL_REASON:
        return _STATUS_BY_CHANNEL_REASON[exc.reason]
    if exc.metadata.get(UPSTREAM_METADATA) and isinstance(exc, _UPSTREAM_FAULTS):
        return 502
    from_channel = exc.reason.startswith(_CHANNEL_REASON_PREFIXES)
    if isinstance(exc, errors.FailedPreconditionError | errors.UnavailableError) and from_channel:
        return 502
    if isinstance(exc, errors.InvalidArgumentError) and "JSON" in exc.reason:
        return 400
    return next((code for cls, code in _STATUS_BY_ERROR if isinstance(exc, cls)), 500)


def error_response(exc: errors.OmniError) -> Response:
    """The HTTP answer for a domain error: status, `{"detail", "reason"}`, field errors and Retry-After."""
    status_code = status_for(exc)
    if status_code == 500:
        log.error("internal error from the mesh: %s (%s)", exc.message, exc.reason)
        return json_response(500, {"detail": "internal error", "reason": "INTERNAL"})
    body: dict[str, Any] = {"detail": exc.message, "reason": exc.reason}
    headers: dict[str, str] = {}
    if isinstance(exc, errors.InvalidArgumentError) and exc.violations:
        body["errors"] = [{"field": v.field, "description": v.description} for v in exc.violations]
    if isinstance(exc, errors.UnavailableError) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, errors.UnauthenticatedError):
        headers["WWW-Authenticate"] = "ApiKey"
    return json_response(status_code, body, headers or None)


async def omni_error_handler(request: Request, exc: Exception) -> Response:
    """Map a `servicekit.errors` exception raised by a route (or a call it made) to HTTP."""
    assert isinstance(exc, errors.OmniError)
    return error_response(exc)


def _clean_validation_errors(raw: Any) -> list[dict[str, Any]]:
    """FastAPI-style error list without `input` and `ctx`: the input may hold a secret and ctx an exception object."""
    cleaned: list[dict[str, Any]] = []
    for item in raw:
        cleaned.append({"type": item.get("type"), "loc": list(item.get("loc", ())), "msg": item.get("msg")})
    return cleaned


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """422 with FastAPI's field-error list; 400 when the body is not JSON at all."""
    assert isinstance(exc, RequestValidationError)
    details = _clean_validation_errors(exc.errors())
    if any(item["type"] == "json_invalid" for item in details):
        if await needs_api_key_and_lacks_it(request):
            return error_response(errors.UnauthenticatedError("missing or invalid API key", reason="API_KEY_INVALID"))
        return json_response(400, {"detail": "request body is not valid JSON", "reason": "INVALID_JSON"})
    return json_response(422, {"detail": details, "reason": "INVALID_ARGUMENT"})


_REASON_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method, ...) as JSON instead of plain text."""
    assert isinstance(exc, StarletteHTTPException)
    reason = _REASON_BY_STATUS.get(exc.status_code, "HTTP_ERROR")
    detail = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else "not found"
    return json_response(exc.status_code, {"detail": detail, "reason": reason}, dict(exc.headers or {}) or None)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Last resort: a bug in the gateway is logged with its traceback and answered with a generic 500 JSON."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(500, {"detail": "internal error", "reason": "INTERNAL"})


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(errors.OmniError, omni_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
