"""The receiver seam: what one inbound event amounts to, and the protocol a webhook channel implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from servicekit import errors
from servicekit.channels import Channel
from servicekit.instances import Instance
from servicekit.messages import InboundMessage

ReceivedKind = Literal["message", "own_send", "ignored"]

NOT_ADDRESSED = "not_addressed"
"""Reason of a message in a group chat that is not for the bot (no mention, not in a thread the bot is in)."""


@dataclass(frozen=True)
class Received:
    """What one inbound event amounts to.

    `kind` is "message" (hand it to the router), "own_send" (record `channel_message_id` so a later echo of our own
    send is a duplicate) or "ignored" (with `reason`). `message` is set whenever the event carried a parseable
    message, also for ignored ones (an echo, no content), so they are recorded for de-duplication and visibility.
    """

    event: str
    kind: ReceivedKind
    reason: str = ""
    channel_message_id: str = ""
    message: InboundMessage | None = None
    challenge: str = ""
    """The channel's handshake value to echo back (Slack's `url_verification`); the event itself is ignored."""
    answer_if_stored: tuple[str, ...] = ()
    """For a "message" answered only in a known context (a Slack thread reply without a mention): channel message
    ids of which one must already be in the inbox (the thread's root, the bot's post in the thread); otherwise the
    accept path ignores it as `NOT_ADDRESSED` and stores nothing. The parser cannot decide this alone: it does no
    I/O, and the inbox is the one place every replica shares."""

    @property
    def is_message_event(self) -> bool:
        """True when the event is someone's message (its trace matters), not our own send, a contact, a presence."""
        return self.message is not None and self.kind != "own_send"


class WebhookReceiver(Protocol):
    """One channel's webhook: authenticate first (nothing is parsed for a stranger), then parse."""

    channel: Channel

    def authenticate(self, instance: Instance, headers: Mapping[str, str], body: bytes) -> None:
        """Raise `UnauthenticatedError` (`webhook_auth.webhook_unauthenticated`) unless the request proves it came
        from the instance's channel account.
        Header names may come in any case."""
        ...

    def parse(self, body: bytes, instance: Instance) -> tuple[Received, dict[str, Any]]:
        """The event the body carries and the decoded body (for the trace); raise `InvalidArgumentError` for
        a body that is not what the channel sends. `instance` (already authenticated) tells whose bot the event
        reached, for channels that must tell the bot's own posts and mentions apart (Slack)."""
        ...


def decode_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; raises `InvalidArgumentError` for anything else."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidArgumentError(
            "the webhook body is not JSON", reason="BODY_NOT_JSON", violations=[errors.FieldViolation("body", str(exc))]
        ) from None
    if not isinstance(decoded, dict):
        raise errors.InvalidArgumentError(
            "the webhook body is not a JSON object",
            reason="BODY_NOT_JSON",
            violations=[errors.FieldViolation("body", f"expected an object, got {type(decoded).__name__}")],
        )
    return decoded
