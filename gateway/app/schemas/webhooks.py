"""The webhook acknowledgement (documented for OpenAPI; the hot path writes it with orjson directly)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class WebhookAck(BaseModel):
    """What ingress did with a webhook."""

    status: Literal["accepted", "duplicate", "ignored"]
    message_id: str | None = None
    trace_id: str | None = None
    reason: str | None = None
