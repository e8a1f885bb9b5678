"""The `BotStatusSource` the Discord sender uses: the bots run in ingress, which answers IngressService.ListBots
from the status every bot's owner stores, whichever replica that is."""

from __future__ import annotations

from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc

from servicekit.convert import CONNECTION_STATES
from servicekit.grpc_clients import call
from services.channels.core.models import ConnectionState, ConnectionStatus


class GrpcBotStatusSource:
    """Reads one instance's bot status from ingress under a short deadline."""

    def __init__(self, stub: ingress_service_pb2_grpc.IngressServiceAsyncStub, *, timeout: float = 3.0) -> None:
        self._stub = stub
        self._timeout = timeout

    async def bot_status(self, instance_name: str) -> ConnectionStatus | None:
        response = await call(
            self._stub.ListBots, ingress_service_pb2.ListBotsRequest(instance_name=instance_name), timeout=self._timeout
        )
        for bot in response.bots:
            if bot.instance_name == instance_name:
                return ConnectionStatus(
                    state=ConnectionState(CONNECTION_STATES.get(bot.state, "error")),
                    raw_state=CONNECTION_STATES.get(bot.state, ""),
                    detail=bot.detail,
                    workspaces=tuple((w.id, w.name) for w in bot.workspaces),
                    latency_ms=bot.latency_ms,
                    account_id=bot.account_id,
                    account_name=bot.account_name,
                )
        return None
