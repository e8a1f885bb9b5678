"""Field types shared by the request models: bounded, valid UTF-8 text and http(s) URLs.

JSON allows lone surrogate escapes ("\\ud800") that Python decodes into strings protobuf cannot encode; rejecting
them here turns what would be an encoding crash deep in a gRPC call into a plain 422.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field


def valid_utf8(value: str) -> str:
    """Refuse strings that cannot be encoded as UTF-8 (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 text") from None
    return value


def http_url(value: str) -> str:
    """Refuse anything but an absolute http(s) URL with a host."""
    valid_utf8(value)
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError("must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in value):
        raise ValueError("must be an http(s) URL, e.g. https://host:8080")
    return value


ShortText = Annotated[str, Field(max_length=256), AfterValidator(valid_utf8)]
"""Names and ids."""
LongText = Annotated[str, Field(max_length=65_536), AfterValidator(valid_utf8)]
"""Message texts and captions."""
SecretText = Annotated[str, Field(max_length=4_096), AfterValidator(valid_utf8)]
"""Keys and tokens (never echoed back)."""
HttpUrl = Annotated[str, Field(max_length=2_048), AfterValidator(http_url)]
"""An http(s) URL kept exactly as given (no normalisation, no added slash)."""

PAGE_MAX = 1_000_000
"""Upper bound of a page number: keeps page * page_size within int32 on the wire."""
