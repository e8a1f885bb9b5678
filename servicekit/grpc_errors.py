"""The one place where domain errors and gRPC statuses meet.

`ErrorMappingInterceptor` turns an `OmniError` raised by a servicer into a status with `google.rpc` details
(`ErrorInfo` with reason and domain, `BadRequest`, `RetryInfo`); any other exception becomes a generic INTERNAL.
`translate_rpc_error` does the reverse for clients.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from servicekit import errors
from servicekit.grpc_handlers import replace_unary_stream, replace_unary_unary

log = logging.getLogger(__name__)

_CODES: list[tuple[type[errors.OmniError], grpc.StatusCode, int]] = [
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    (errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    (errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED, code_pb2.DEADLINE_EXCEEDED),
    (errors.InternalError, grpc.StatusCode.INTERNAL, code_pb2.INTERNAL),
]
_BY_GRPC_CODE = {code: cls for cls, code, _ in _CODES}


def to_status(exc: errors.OmniError, domain: str) -> Any:
    """The rich gRPC status for a domain error."""
    grpc_code, numeric = next(((g, n) for cls, g, n in _CODES if isinstance(exc, cls)), (None, code_pb2.INTERNAL))
    del grpc_code
    status = status_pb2.Status(code=numeric, message=exc.message)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain, metadata=exc.metadata)
    status.details.add().Pack(info)
    if isinstance(exc, errors.InvalidArgumentError) and exc.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        status.details.add().Pack(bad)
    if isinstance(exc, errors.UnavailableError) and exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps exceptions raised by servicer methods to gRPC statuses; `domain` names the service."""

    def __init__(self, domain: str) -> None:
        self._domain = domain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                try:
                    return await inner(request, context)
                except Exception as exc:
                    await self._abort(exc, context, method)

            return replace_unary_unary(handler, unary_unary)
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except Exception as exc:
                    await self._abort(exc, context, method)

            return replace_unary_stream(handler, unary_stream)
        return handler

    async def _abort(self, exc: Exception, context: Any, method: str) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if not isinstance(exc, errors.OmniError):
            log.exception("unhandled error in %s", method)
            exc = errors.InternalError("internal error")
        elif isinstance(exc, errors.InternalError):
            log.error("internal error in %s: %s", method, exc.message)
        await context.abort_with_status(to_status(exc, self._domain))


def translate_rpc_error(exc: grpc.aio.AioRpcError) -> errors.OmniError:
    """The domain error matching a failed call, with the reason, violations and retry hint it carried."""
    cls = _BY_GRPC_CODE.get(exc.code())
    message = exc.details() or exc.code().name
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[errors.FieldViolation] = []
    retry_after: float | None = None
    status = rpc_status.from_call(exc) if exc.trailing_metadata() else None  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    if cls is errors.InvalidArgumentError:
        return errors.InvalidArgumentError(message, reason=reason, violations=violations, metadata=metadata)
    if cls is errors.UnavailableError or (
        cls is None
        and exc.code()
        in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.UNKNOWN,
        )
    ):
        return errors.UnavailableError(message, reason=reason, retry_after=retry_after, metadata=metadata)
    if cls is None:
        return errors.InternalError(message, reason=reason, metadata=metadata)
    return cls(message, reason=reason, metadata=metadata)
