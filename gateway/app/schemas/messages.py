"""Bodies and answers of the API sends (send-text, send-media)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from gateway.app.schemas.common import HttpUrl, LongText, ShortText, valid_utf8

MediaType = Literal["image", "audio", "video", "document", "sticker"]
Recipient = Annotated[
    str,
    Field(min_length=1, max_length=256, description="+5511999999999, digits, a WhatsApp JID, or a channel id."),
    AfterValidator(valid_utf8),
]
MEDIA_BASE64_MAX_CHARS = 150 * 1024 * 1024
"""Base64 media up to ~110 MB of file, under the mesh's gRPC message limit."""


class SendTextIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-text."""

    recipient: Recipient
    text: Annotated[LongText, Field(min_length=1)]
    session_id: ShortText | None = None


class SendMediaIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-media: the file by URL or as base64, with an optional caption."""

    recipient: Recipient
    media_url: HttpUrl | None = None
    media_base64: Annotated[str, Field(max_length=MEDIA_BASE64_MAX_CHARS), AfterValidator(valid_utf8)] | None = None
    caption: LongText | None = None
    media_type: MediaType | None = Field(default=None, description="Inferred from mime_type by the hub when absent.")
    mime_type: ShortText | None = None
    filename: ShortText | None = None
    session_id: ShortText | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SendMediaIn:
        if not self.media_url and not self.media_base64:
            raise ValueError("give media_url or media_base64")
        if self.media_url and self.media_base64:
            raise ValueError("give media_url or media_base64, not both")
        return self


class SendOut(BaseModel):
    """What an API send did."""

    status: Literal["sent"] = "sent"
    message_ids: list[str]
    trace_id: str | None = None
