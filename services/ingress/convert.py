"""Proto ↔ domain for what only ingress has on the wire: dead letters and bot statuses (the canonical message goes
through `servicekit.convert`)."""

from __future__ import annotations

from omni.ingress.v1 import inbox_pb2, ingress_service_pb2

from servicekit.convert import CONNECTION_STATE_VALUES, channel_value, message_to_proto, timestamp, workspaces_to_proto
from services.ingress.core.accept import DeadLetter
from services.ingress.core.bots.status import BotStatus


def dead_letter_to_proto(letter: DeadLetter) -> inbox_pb2.DeadLetter:
    return inbox_pb2.DeadLetter(
        id=letter.id,
        message=message_to_proto(letter.message),
        attempts=letter.attempts,
        last_error=letter.last_error,
        dead_at=timestamp(letter.dead_at),
        trace_id=letter.trace_id,
    )


def bot_status_to_proto(status: BotStatus) -> ingress_service_pb2.BotStatus:
    return ingress_service_pb2.BotStatus(
        instance_name=status.instance_name,
        channel=channel_value(status.channel),
        state=CONNECTION_STATE_VALUES[status.state],
        detail=status.detail,
        owner=status.owner,
        workspaces=workspaces_to_proto(status.workspaces),
        latency_ms=status.latency_ms,
        account_id=status.account_id,
        account_name=status.account_name,
        updated_at=timestamp(status.updated_at),
    )
