"""omni.ingress.v1.DeadLetter -> dead-letter JSON."""

from __future__ import annotations

from google.protobuf import json_format
from omni.ingress.v1 import inbox_pb2

from gateway.app.mappers.instances import channel_name
from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.dead_letters import DeadLetterOut


def dead_letter_out(letter: inbox_pb2.DeadLetter) -> DeadLetterOut:
    """A dead letter with the headline fields pulled up and the whole canonical message attached."""
    message = letter.message
    return DeadLetterOut(
        id=letter.id,
        instance_name=message.instance_name,
        channel=channel_name(message.channel),
        chat_id=message.chat_id or None,
        sender_id=message.sender.id or None,
        text=message.text or None,
        attempts=letter.attempts,
        last_error=letter.last_error or None,
        dead_at=to_datetime(letter.dead_at),
        trace_id=letter.trace_id or None,
        message=json_format.MessageToDict(message, preserving_proto_field_name=True),
    )
