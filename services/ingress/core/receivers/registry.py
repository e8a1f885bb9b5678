"""The webhook receivers by channel: the only place ingress learns which channels post webhooks."""

from __future__ import annotations

from servicekit import errors
from servicekit.channels import Channel
from services.ingress.core.receivers.base import WebhookReceiver
from services.ingress.core.receivers.slack import SlackReceiver
from services.ingress.core.receivers.whatsapp import EvolutionReceiver

WEBHOOK_RECEIVERS: dict[Channel, WebhookReceiver] = {
    Channel.WHATSAPP: EvolutionReceiver(),
    Channel.SLACK: SlackReceiver(),
}
"""Channels whose events arrive as webhooks through the gateway (Discord's arrive through the bots ingress runs)."""


def webhook_receiver(channel: Channel) -> WebhookReceiver:
    """The receiver of `channel`; raises `InvalidArgumentError` for a channel that posts no webhooks."""
    receiver = WEBHOOK_RECEIVERS.get(channel)
    if receiver is None:
        raise errors.InvalidArgumentError(
            f"{channel} does not deliver webhooks",
            violations=[errors.FieldViolation("channel", f"{channel} messages arrive through the bot, not a webhook")],
        )
    return receiver
