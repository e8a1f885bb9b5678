"""Bodies and answers of the API sends (send-text, send-media, send-audio, send-sticker, send-reaction, send-location,
send-contact) and chat actions (send-presence, fetch-profile)."""

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


Base64Media = Annotated[str, Field(max_length=MEDIA_BASE64_MAX_CHARS), AfterValidator(valid_utf8)]


def _one_source(url: str | None, data: str | None, name: str) -> None:
    """A file comes by URL or as base64: exactly one of the two."""
    if not url and not data:
        raise ValueError(f"give {name}_url or {name}_base64")
    if url and data:
        raise ValueError(f"give {name}_url or {name}_base64, not both")


class SendAudioIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-audio: a voice note (WhatsApp re-encodes it and shows it as recorded)."""

    recipient: Recipient
    audio_url: HttpUrl | None = None
    audio_base64: Base64Media | None = None
    mime_type: ShortText | None = None
    session_id: ShortText | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SendAudioIn:
        _one_source(self.audio_url, self.audio_base64, "audio")
        return self


class SendStickerIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-sticker: an image sent as a sticker."""

    recipient: Recipient
    sticker_url: HttpUrl | None = None
    sticker_base64: Base64Media | None = None
    mime_type: ShortText | None = None
    session_id: ShortText | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SendStickerIn:
        _one_source(self.sticker_url, self.sticker_base64, "sticker")
        return self


class SendReactionIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-reaction: an emoji on a message of the chat; "" removes it."""

    recipient: Recipient = Field(description="The chat the message is in.")
    message_id: Annotated[ShortText, Field(min_length=1)] = Field(
        description="The channel's id of the message reacted to (WhatsApp key.id, as send-text returns)."
    )
    reaction: Annotated[str, Field(max_length=32), AfterValidator(valid_utf8)] = Field(
        description='One emoji; "" removes an earlier reaction.'
    )
    from_me: bool = Field(default=False, description="The message reacted to was sent by this instance.")
    session_id: ShortText | None = None


class SendLocationIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-location: a map pin."""

    recipient: Recipient
    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    name: ShortText | None = None
    address: Annotated[str, Field(max_length=1024), AfterValidator(valid_utf8)] | None = None
    session_id: ShortText | None = None


PhoneNumber = Annotated[
    str,
    Field(min_length=5, max_length=40, pattern=r"^\+?[0-9][0-9 ().-]{4,38}$", examples=["+5511999999999"]),
]


class ContactCardIn(BaseModel):
    """One contact card."""

    full_name: Annotated[ShortText, Field(min_length=1)]
    phone_number: PhoneNumber
    email: ShortText | None = None
    organization: ShortText | None = None


class SendContactIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-contact: contact cards, sent as one message."""

    recipient: Recipient
    contacts: list[ContactCardIn] = Field(min_length=1, max_length=50)
    session_id: ShortText | None = None


class SendPresenceIn(BaseModel):
    """Body of POST /api/v1/{instance}/send-presence: what the chat shows (typing, recording, ...) for a while."""

    recipient: Recipient
    presence: Literal["composing", "recording", "paused", "available"]
    duration_ms: int | None = Field(
        default=None, ge=0, le=20_000, description="How long it shows (default 3000); the call lasts as long."
    )


class PresenceOut(BaseModel):
    """What send-presence did."""

    status: Literal["sent"] = "sent"


class FetchProfileIn(BaseModel):
    """Body of POST /api/v1/{instance}/fetch-profile."""

    recipient: Recipient


class ProfileOut(BaseModel):
    """A person's public profile, as far as the channel shares it."""

    id: str
    name: str | None = None
    phone_number: str | None = None
    status: str | None = Field(default=None, description='The "about" text.')
    picture_url: str | None = None
    is_business: bool = False
    description: str | None = Field(default=None, description="A business account's description.")


class SendOut(BaseModel):
    """What an API send did."""

    status: Literal["sent"] = "sent"
    message_ids: list[str]
    trace_id: str | None = None
