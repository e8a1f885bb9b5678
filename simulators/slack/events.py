"""Events API delivery: signed POSTs of `event_callback` envelopes to an app's Request URL, with Slack's retries.

Slack expects a 2xx within 3 s. Otherwise it retries up to 3 times (immediately, after about 1 and 5 minutes)
with `X-Slack-Retry-Num` and `X-Slack-Retry-Reason`; an answer carrying `X-Slack-No-Retry: 1` stops the
retries. The delays are configurable so tests exercise retries in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

import aiohttp
import orjson

from simulators.slack.state import Attempt, Delivery
from simulators.slack.wire import sign

log = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("X-Slack-Request-Timestamp", "X-Slack-Signature")


class HttpEvents:
    """POSTs events through one client session, open while the simulator serves."""

    def __init__(self, *, ack_timeout: float, retry_delays: Sequence[float]) -> None:
        self.ack_timeout = ack_timeout
        self.retry_delays = list(retry_delays)
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, url: str, secret: str, delivery: Delivery) -> None:
        """POST `delivery.envelope` until a 2xx, `X-Slack-No-Retry`, or the retries run out; records every attempt."""
        body = orjson.dumps(delivery.envelope)
        reason = ""
        try:
            for retry_num in range(len(self.retry_delays) + 1):
                if retry_num:
                    await asyncio.sleep(self.retry_delays[retry_num - 1])
                attempt = await self.post(url, body, secret=secret, retry_num=retry_num, retry_reason=reason)
                delivery.attempts.append(attempt)
                if attempt.status is not None and 200 <= attempt.status < 300:
                    return
                if attempt.headers.get("x-slack-no-retry") == "1":
                    return
                reason = _retry_reason(attempt)
        finally:
            delivery.done.set()

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        secret: str | None,
        timestamp: str | None = None,
        retry_num: int = 0,
        retry_reason: str = "",
        omit_headers: Iterable[str] = (),
        extra_headers: dict[str, str] | None = None,
        signed_body: bytes | None = None,
        timeout: float | None = None,
    ) -> Attempt:
        """One signed POST. `signed_body` (when given) is what the signature covers, to simulate tampering."""
        if self._session is None:
            raise RuntimeError("the simulator is not running")
        stamp = timestamp if timestamp is not None else str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        headers["X-Slack-Request-Timestamp"] = stamp
        if secret is not None:
            headers["X-Slack-Signature"] = sign(secret, stamp, signed_body if signed_body is not None else body)
        if retry_num:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        headers.update(extra_headers or {})
        omitted = {name.lower() for name in omit_headers}
        headers = {k: v for k, v in headers.items() if k.lower() not in omitted}
        started = time.monotonic()
        client_timeout = aiohttp.ClientTimeout(total=timeout if timeout is not None else self.ack_timeout)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=client_timeout) as response:
                text = await response.text(errors="replace")
                answer = {k.lower(): v for k, v in response.headers.items()}
                return Attempt(response.status, text, answer, retry_num, retry_reason, time.monotonic() - started)
        except TimeoutError:
            return Attempt(None, "", {}, retry_num, retry_reason, time.monotonic() - started, "http_timeout")
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("event POST to %s failed: %s", url, exc)
            return Attempt(None, "", {}, retry_num, retry_reason, time.monotonic() - started, "connection_failed")


def _retry_reason(attempt: Attempt) -> str:
    if attempt.error is not None:
        return attempt.error
    return "http_error"
