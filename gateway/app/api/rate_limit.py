"""Per-instance rate limits on the two doors an instance's traffic comes through: its webhooks and its REST sends.

One noisy (or hostile) tenant must not starve the others: each (instance, kind) has a token bucket refilled at
`rate` tokens per second up to `burst`. The defaults are far above real traffic (a WhatsApp number, or the
benchmark, at hundreds of messages per second), so they only stop floods.

Cheap by construction: the gateway runs on one event loop, so a bucket is two floats updated without a lock, and a
request costs one dict lookup. Memory is bounded: buckets live in an LRU of at most `max_buckets` entries, so the
webhook URL (which a stranger chooses) cannot grow it without limit; a bucket evicted while idle was full anyway,
and a full bucket is exactly what a new one starts as. With several uvicorn workers each has its own buckets (the
effective limit is per worker).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.app.api.errors import json_response

API_PREFIX = "/api/v1/"
WEBHOOK_PREFIX = "/api/v1/webhook/"
MAX_NAME_CHARS = 64
"""Instance names are at most 63 characters; a longer path segment is cut so it cannot make a bucket key large."""


class TokenBuckets:
    """Token buckets by key: `take` spends one token or says how long until one is available."""

    def __init__(
        self, rate: float, burst: int, *, max_buckets: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 when a token was spent; otherwise the seconds until the next token (nothing is spent)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.rate

    def give_back(self, key: str) -> None:
        """Return the token a request took (it turned out not to be the instance's traffic)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + 1.0)

    def __len__(self) -> int:
        return len(self._buckets)


def limited_instance(scope: Scope) -> tuple[str, str] | None:
    """(kind, instance name) of a rate-limited request, or None: POST /api/v1/webhook/{channel}/{instance}[/...] is
    a "webhook", POST /api/v1/{instance}/send-* a "send"."""
    if scope.get("method") != "POST":
        return None
    path = str(scope.get("path", ""))
    if path.startswith(WEBHOOK_PREFIX):
        segments = path[len(WEBHOOK_PREFIX) :].split("/", 2)
        if len(segments) >= 2 and segments[1]:
            return "webhook", segments[1][:MAX_NAME_CHARS]
        return None
    if path.startswith(API_PREFIX):
        segments = path[len(API_PREFIX) :].split("/")
        if len(segments) == 2 and segments[0] and segments[1].startswith("send-"):
            return "send", segments[0][:MAX_NAME_CHARS]
    return None


class RateLimit:
    """Pure ASGI middleware answering 429 with Retry-After when an instance's bucket for its kind is empty."""

    def __init__(self, app: ASGIApp, *, buckets: dict[str, TokenBuckets]) -> None:
        self._app = app
        self._buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = limited_instance(scope)
            buckets = self._buckets.get(target[0]) if target is not None else None
            if target is not None and buckets is not None:
                wait = buckets.take(target[1])
                if wait > 0:
                    retry_after = max(1, math.ceil(wait))
                    kind, instance = target
                    body = {
                        "detail": f"too many {kind} requests for instance {instance!r}: over {buckets.rate:g}/s",
                        "reason": "RATE_LIMITED",
                        "retry_after": retry_after,
                    }
                    await json_response(429, body, {"Retry-After": str(retry_after)})(scope, receive, send)
                    return
                await self._app(scope, receive, _refunding(send, buckets, target[1]))
                return
        await self._app(scope, receive, send)


NOT_THE_INSTANCES_TRAFFIC = frozenset({401, 403, 404})
"""Answers that mean the request was not the instance's: a stranger without its webhook secret or API key (or a key
of another tenant) must not be able to spend the instance's allowance and get its real traffic throttled."""


def _refunding(send: Send, buckets: TokenBuckets, key: str) -> Send:
    """`send`, giving the request's token back when the answer shows it was not the instance's own traffic."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] in NOT_THE_INSTANCES_TRAFFIC:
            buckets.give_back(key)
        await send(message)

    return wrapped


def buckets_from(webhook: tuple[float, int], send: tuple[float, int]) -> dict[str, TokenBuckets]:
    """The buckets per kind for (rate, burst) settings; a rate of 0 leaves that kind unlimited."""
    kinds = {"webhook": webhook, "send": send}
    return {kind: TokenBuckets(rate, burst) for kind, (rate, burst) in kinds.items() if rate > 0}
