"""The bytes and name of a file an agent or API caller sends, for channels that upload files themselves (Discord,
Slack): inline base64 decoded, or a URL downloaded, both capped; Evolution fetches URLs itself and needs none of this.

The URL was chosen by an agent, so it is fetched through the guarded session (no link-local or metadata address),
without following redirects, and never read past the cap. Nothing has been posted yet when this runs, so a failure
here is never an unknown outcome.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import posixpath
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from servicekit.address_guard import AddressRefusedError
from servicekit.messages import Media, raw_base64
from servicekit.outbound_http import ResponseTooLargeError, is_redirect, read_capped, redirect_message
from services.channels.core.senders.base import ChannelRejectedError, ChannelTransientError

KIND_EXTENSIONS = {"image": ".png", "audio": ".ogg", "video": ".mp4", "sticker": ".webp", "document": ".bin"}


class MediaFiles:
    """Reads outgoing media into bytes, refusing anything over `max_bytes` (413) before it is uploaded."""

    def __init__(self, max_bytes: int, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.max_bytes = max_bytes
        self._session = session

    async def read(self, media: Media) -> tuple[bytes, str]:
        """The file's bytes and its filename."""
        if media.base64:
            return self.decode(media.base64), filename_of(media, "")
        if not media.url:
            raise ChannelRejectedError("the media has neither a URL nor base64 content", status=400)
        data, content_type = await self.download(media.url)
        return data, filename_of(media, content_type)

    def decode(self, raw: str) -> bytes:
        """Inline base64 (a data: prefix allowed), checked against the cap before and after decoding."""
        payload = "".join(raw_base64(raw).split())
        if len(payload) * 3 // 4 > self.max_bytes + 2:
            raise self.too_big()
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ChannelRejectedError(f"the media's base64 content is not valid base64: {exc}", status=400) from exc
        if len(data) > self.max_bytes:
            raise self.too_big()
        return data

    async def download(self, url: str) -> tuple[bytes, str]:
        """GET the media URL: its bytes and Content-Type."""
        try:
            async with self._session().get(url, allow_redirects=False) as response:
                if is_redirect(response.status):
                    raise ChannelRejectedError(redirect_message(response, "the media URL"), status=400)
                if response.status >= 400:
                    message = f"could not download the media ({response.status} {response.reason or ''})".strip()
                    if response.status >= 500 or response.status == 429:
                        raise ChannelTransientError(message)
                    raise ChannelRejectedError(message, status=400)
                try:
                    data = await read_capped(response, self.max_bytes)
                except ResponseTooLargeError:
                    raise self.too_big() from None
                return data, response.headers.get("Content-Type", "")
        except AddressRefusedError as exc:
            raise ChannelRejectedError(f"could not download the media: {exc}", status=400) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ChannelTransientError(f"could not download the media: {exc}") from exc

    def too_big(self) -> ChannelRejectedError:
        return ChannelRejectedError(f"the media is larger than {self.max_bytes} bytes", status=413)


def filename_of(media: Media, downloaded_type: str) -> str:
    """The file's name: the media's own, the URL's last segment when it has an extension, or the kind plus the MIME
    type's extension (Discord and Slack pick their preview from the name)."""
    if media.filename:
        return posixpath.basename(media.filename.replace("\\", "/")) or "file"
    if media.url:
        segment = posixpath.basename(urlsplit(media.url).path)
        if "." in segment.strip("."):
            return segment
    mime = (media.mime_type or downloaded_type).split(";")[0].strip().lower()
    major = mime.split("/")[0] if mime else ""
    kind = media.type or (major if major in ("image", "audio", "video") else "") or "file"
    extension = (mimetypes.guess_extension(mime) if mime else None) or KIND_EXTENSIONS.get(kind, ".bin")
    return kind + extension
