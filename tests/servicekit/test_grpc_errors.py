"""Domain errors cross a real gRPC hop intact: one interceptor on the server, one translation on the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit import errors
from servicekit.grpc_clients import call, open_channel
from servicekit.grpc_server import add_health_and_reflection, bind, new_server, set_serving


class _FailingHealth(health_pb2_grpc.HealthServicer):
    """A servicer whose Check raises the error it is given, so the interceptor must map it."""

    def __init__(self) -> None:
        self.error: Exception = errors.NotFoundError("nope")

    async def Check(self, request: health_pb2.HealthCheckRequest, context: object) -> health_pb2.HealthCheckResponse:
        raise self.error


@pytest.fixture
async def failing() -> AsyncIterator[tuple[_FailingHealth, health_pb2_grpc.HealthStub]]:
    server = new_server("test", tracing=False)
    servicer = _FailingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", tracing=False)
    try:
        yield servicer, health_pb2_grpc.HealthStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (errors.NotFoundError("no such instance", reason="INSTANCE_NOT_FOUND"), errors.NotFoundError),
        (errors.AlreadyExistsError("taken"), errors.AlreadyExistsError),
        (errors.FailedPreconditionError("refused", reason="CHANNEL_REJECTED"), errors.FailedPreconditionError),
        (errors.PermissionDeniedError("no"), errors.PermissionDeniedError),
        (errors.DeadlineExceededError("slow"), errors.DeadlineExceededError),
    ],
)
async def test_domain_errors_round_trip(
    failing: tuple[_FailingHealth, health_pb2_grpc.HealthStub], raised: errors.OmniError, expected: type
) -> None:
    servicer, stub = failing
    servicer.error = raised
    with pytest.raises(expected) as caught:
        await call(stub.Check, health_pb2.HealthCheckRequest(), timeout=5)
    assert caught.value.message == raised.message
    assert caught.value.reason == raised.reason


async def test_violations_and_retry_hint_survive(failing: tuple[_FailingHealth, health_pb2_grpc.HealthStub]) -> None:
    servicer, stub = failing
    servicer.error = errors.InvalidArgumentError("bad", violations=[errors.FieldViolation("name", "too long")])
    with pytest.raises(errors.InvalidArgumentError) as bad:
        await call(stub.Check, health_pb2.HealthCheckRequest(), timeout=5)
    assert bad.value.violations == [errors.FieldViolation("name", "too long")]
    servicer.error = errors.UnavailableError("busy", retry_after=2.5)
    with pytest.raises(errors.UnavailableError) as busy:
        await call(stub.Check, health_pb2.HealthCheckRequest(), timeout=5)
    assert busy.value.retry_after == pytest.approx(2.5)


async def test_unexpected_exception_is_generic_internal(
    failing: tuple[_FailingHealth, health_pb2_grpc.HealthStub],
) -> None:
    servicer, stub = failing
    servicer.error = KeyError("secret detail")
    with pytest.raises(errors.InternalError) as caught:
        await call(stub.Check, health_pb2.HealthCheckRequest(), timeout=5)
    assert "secret detail" not in caught.value.message


async def test_health_reports_serving() -> None:
    server = new_server("test", tracing=False)
    health = add_health_and_reflection(server, ["omni.test.v1.TestService"])
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    await set_serving(health, ["omni.test.v1.TestService"], True)
    channel = open_channel(f"127.0.0.1:{port}", tracing=False)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await call(stub.Check, health_pb2.HealthCheckRequest(service="omni.test.v1.TestService"), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()
        await server.stop(None)
