"""The `RouterPort` the dispatcher uses in production: RouterService.RouteMessage over gRPC."""

from __future__ import annotations

from omni.router.v1 import router_service_pb2, router_service_pb2_grpc

from servicekit.convert import OUTCOMES, message_to_proto
from servicekit.grpc_clients import call
from servicekit.messages import InboundMessage
from services.ingress.core.dispatcher import RouteOutcome


class GrpcRouterPort:
    """Calls the router with a deadline; failures arrive as domain errors (UnavailableError, NotFoundError...)."""

    def __init__(self, stub: router_service_pb2_grpc.RouterServiceAsyncStub) -> None:
        self._stub = stub

    async def route(
        self, message: InboundMessage, *, attempt: int, final_attempt: bool, timeout: float
    ) -> RouteOutcome:
        request = router_service_pb2.RouteMessageRequest(
            message=message_to_proto(message), attempt=attempt, final_attempt=final_attempt
        )
        response = await call(self._stub.RouteMessage, request, timeout=timeout)
        return RouteOutcome(outcome=OUTCOMES.get(response.outcome, ""), error_message=response.error_message)
