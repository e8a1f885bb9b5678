"""Domain errors shared by every core. They carry no gRPC types: the server interceptor in `grpc_errors` turns
them into a gRPC status with `google.rpc` details, and the client wrapper turns a status back into the same
class, so a `NotFoundError` raised in the router core reaches the gateway as a `NotFoundError`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request."""

    field: str
    description: str


class OmniError(Exception):
    """Base of the domain errors. `reason` is an UPPER_SNAKE machine-readable cause."""

    default_reason = "ERROR"

    def __init__(self, message: str, *, reason: str = "", metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = metadata or {}


class NotFoundError(OmniError):
    """The named resource does not exist."""

    default_reason = "NOT_FOUND"


class AlreadyExistsError(OmniError):
    """A resource with that name already exists."""

    default_reason = "ALREADY_EXISTS"


class InvalidArgumentError(OmniError):
    """The request is wrong and must not be retried as is."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        violations: list[FieldViolation] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = violations or []


class FailedPreconditionError(OmniError):
    """The system is not in a state to do this (for example a channel refused a send for good)."""

    default_reason = "FAILED_PRECONDITION"


class PermissionDeniedError(OmniError):
    """The caller is known but may not do this."""

    default_reason = "PERMISSION_DENIED"


class UnauthenticatedError(OmniError):
    """The caller did not prove who it is."""

    default_reason = "UNAUTHENTICATED"


@dataclass
class _RetryHint:
    seconds: float | None = field(default=None)


class UnavailableError(OmniError):
    """A dependency failed transiently; the same request may succeed later (after `retry_after` seconds)."""

    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        retry_after: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class DeadlineExceededError(OmniError):
    """A dependency did not answer in time."""

    default_reason = "DEADLINE_EXCEEDED"


class InternalError(OmniError):
    """A bug or an unexpected failure; details are in the logs, not in the error."""

    default_reason = "INTERNAL"
