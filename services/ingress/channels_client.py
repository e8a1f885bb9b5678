"""Relays the connection news of authenticated Evolution webhooks (connection.update, qrcode.updated) to
ChannelsService.RecordConnectionEvent, which keeps each instance's last state and login QR.

Why the webhook is answered 2xx even when channels cannot be told: Evolution retries a failed webhook for about
twenty minutes, but the state is also read on demand (channels asks Evolution when it has nothing recorded), and a
connection event is superseded by the next one anyway. A relay failure is logged, never turned into a 5xx that would
make Evolution hammer the hub with an event nobody can use.
"""

from __future__ import annotations

import logging
import time

import grpc
import orjson
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc
from omni.common.v1 import channel_pb2

from servicekit.convert import CONNECTION_STATE_VALUES, timestamp
from servicekit.errors import OmniError
from servicekit.grpc_clients import call
from services.ingress.core.evolution_parser import ConnectionReport, parse_connection_event

log = logging.getLogger(__name__)


def report_to_proto(
    instance_name: str, report: ConnectionReport, occurred_at: float
) -> channels_service_pb2.RecordConnectionEventRequest:
    """The RecordConnectionEvent request of one report (an empty state keeps the last one: a QR event)."""
    return channels_service_pb2.RecordConnectionEventRequest(
        instance_name=instance_name,
        state=CONNECTION_STATE_VALUES.get(report.state, channel_pb2.CONNECTION_STATE_UNSPECIFIED),
        raw_state=report.raw_state,
        qr_code=report.qr_code,
        pairing_code=report.pairing_code,
        detail=report.detail,
        account_id=report.account_id,
        account_name=report.account_name,
        occurred_at=timestamp(occurred_at),
    )


class GrpcConnectionRelay:
    """Tells channels what an authenticated connection webhook said, under a short deadline, never raising."""

    def __init__(self, stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, *, timeout: float = 2.0) -> None:
        self._stub = stub
        self._timeout = timeout

    async def relay(self, instance_name: str, body: bytes) -> None:
        """Parse `body` (already authenticated and known to be a connection event) and record it; the receipt time
        orders events (Evolution's `date_time` is its local clock labelled UTC, contract §1.3)."""
        received_at = time.time()
        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        report = parse_connection_event(envelope) if isinstance(envelope, dict) else None
        if report is None:
            return
        request = report_to_proto(instance_name, report, received_at)
        try:
            await call(self._stub.RecordConnectionEvent, request, timeout=self._timeout, wait_for_ready=False)
        except (OmniError, grpc.aio.AioRpcError) as exc:
            log.warning("connection event of %s not recorded (the state is read on demand): %s", instance_name, exc)
