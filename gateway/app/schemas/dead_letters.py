"""Dead letters: inbound messages whose delivery gave up, waiting for an operator."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class DeadLetterOut(BaseModel):
    """One dead letter with the canonical message it holds."""

    id: str
    instance_name: str
    channel: str
    chat_id: str | None = None
    sender_id: str | None = None
    text: str | None = None
    attempts: int
    last_error: str | None = None
    dead_at: datetime | None = None
    trace_id: str | None = None
    message: dict[str, Any]


class DeadLetterList(BaseModel):
    """One page of dead letters, newest first."""

    dead_letters: list[DeadLetterOut]
    page: int
    page_size: int
    total_count: int


class RedeliverOut(BaseModel):
    """The dead letter is back in the inbox with a fresh attempt budget."""

    id: str
    status: Literal["redelivering"] = "redelivering"
