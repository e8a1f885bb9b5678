"""WhatsApp's receiver: Evolution API webhooks, authenticated by the instance's webhook secret."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servicekit.channels import Channel
from servicekit.instances import Instance
from services.ingress.core.evolution_parser import parse_envelope
from services.ingress.core.group_addressing import OwnLids, apply_group_reply
from services.ingress.core.receivers.base import Received, decode_object
from services.ingress.core.receivers.webhook_auth import check_webhook_secret


class EvolutionReceiver:
    """Evolution API envelopes (evolution/CONTRACT.md §1-§3) → `Received`."""

    channel = Channel.WHATSAPP

    def authenticate(self, instance: Instance, headers: Mapping[str, str], body: bytes) -> None:
        check_webhook_secret(instance, headers)

    def __init__(self) -> None:
        self._own_lids = OwnLids()

    def parse(self, body: bytes, instance: Instance) -> tuple[Received, dict[str, Any]]:
        envelope = decode_object(body)
        self._own_lids.learn(instance.name, envelope)
        received = apply_group_reply(parse_envelope(envelope), envelope, instance, self._own_lids.get(instance.name))
        return received, envelope
