"""Hygiene of the hub's calls to tenant-chosen servers (agents, Evolution, media URLs): bounded reads, no redirects.

A tenant's server is not trusted to be small or to stay put. A reply is read incrementally and abandoned as soon
as it passes a cap, so a huge or endless body costs at most the cap in memory. Requests are made with
`allow_redirects=False` and a 3xx is an error naming its `Location`: following it would let a validated URL
hand the call (with its API key and signature headers) to a host nobody checked.
"""

from __future__ import annotations

import aiohttp

READ_CHUNK = 64 * 1024


class ResponseTooLargeError(Exception):
    """The peer's body exceeded the cap; only the cap (plus one chunk at most) was read."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        said = f" (Content-Length {declared})" if declared is not None else ""
        super().__init__(f"response body larger than {limit} bytes{said}")
        self.limit = limit


def is_redirect(status: int) -> bool:
    """True for the 3xx answers aiohttp would otherwise follow (and 300/304, which are no reply either)."""
    return 300 <= status < 400


def redirect_message(response: aiohttp.ClientResponse, who: str) -> str:
    """ "<who> answered HTTP 302 redirecting to <Location>; redirects are not followed"."""
    location = response.headers.get("Location", "")
    target = f" redirecting to {location}" if location else ""
    return f"{who} answered HTTP {response.status}{target}; redirects are not followed"


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, at most `limit` bytes; raises `ResponseTooLargeError` without reading the rest.

    A declared Content-Length over the cap is refused before reading anything; otherwise the body is read in
    chunks and the read stops once the cap is passed (the connection is then closed, not drained, by aiohttp).
    """
    declared = response.content_length
    if declared is not None:
        if declared > limit:
            raise ResponseTooLargeError(limit, declared)
        return await response.read()  # aiohttp reads exactly Content-Length bytes: the common, cheap case
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)
