"""Calls a tenant's agent per the public agent contract (`POST {agent_api_url}/api/agent/chat`).

One shared aiohttp session serves every call (connection reuse matters on the hot path). The instance's
`agent_timeout_seconds` bounds the whole call, retries included. Connection failures and 5xx answers are tried again
at most `max_tries` times in all with a short back-off (a load balancer's hiccup or a restart of a second), then the
call fails as transient: the inbox's own retry, with its longer back-off, takes over, and the failed attempt shows on
the message's trace at once (error, attempt count, next retry) instead of after `agent_timeout` seconds of silent
retrying. A 4xx, invalid JSON or a non-object body will not get better on retry and is reported as permanent.

Hygiene (the agent is the tenant's server, not ours): a redirect is never followed (it is a permanent error naming
its Location, since following it would carry the API key to a host nobody validated); the reply is read at most
`max_response_bytes` deep (a bigger one is a permanent error, abandoned without buffering it); a refused address
(`servicekit.address_guard`, when the session is a guarded one) is a permanent error.

Signing: when the instance has an `agent_signing_secret`, every attempt carries Standard Webhooks headers over the
exact bytes posted (`servicekit.standard_webhooks`). `webhook-id` stays the same across attempts (the spec's
idempotency key, so an agent can drop a retry it already answered); the timestamp and signature are fresh per
attempt, so a retry late in a long budget is still inside the agent's tolerance window.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from opentelemetry import propagate, trace

from servicekit import standard_webhooks
from servicekit import trace_attributes as attrs
from servicekit.address_guard import AddressRefusedError
from servicekit.outbound_http import ResponseTooLargeError, is_redirect, read_capped, redirect_message

log = logging.getLogger(__name__)

CHAT_PATH = "/api/agent/chat"
TEXT_KEYS = ("text", "message", "response", "content")
"""Where the reply text may be, in order of preference."""
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
"""Largest agent reply read (1 MiB): far above any chat answer, far below what would hurt the router."""
DEFAULT_MAX_TRIES = 3
"""Requests per call (one attempt of the inbox): 3 tries over ~0.35 s of back-off ride out a hiccup, not an outage."""
ERROR_SNIPPET_BYTES = 200
"""How much of a non-2xx body is read: enough for the error message, whatever the body's size."""


class AgentError(Exception):
    """The agent call failed; `transient` says whether a later attempt may succeed."""

    transient = False

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AgentPermanentError(AgentError):
    """A 3xx or 4xx, invalid JSON, a body that is not an object or too big, or a refused address."""


class AgentTransientError(AgentError):
    """Unreachable, 5xx or out of time after retries."""

    transient = True


@dataclass(frozen=True)
class AgentReply:
    """What the agent answered."""

    text: str
    media: list[Any] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    status: int = 200


def parse_reply(body: bytes, status: int) -> AgentReply:
    """The reply from a 2xx body; raises `AgentPermanentError` when it is not a JSON object."""
    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise AgentPermanentError(f"agent returned invalid JSON (HTTP {status})", status=status) from None
    if not isinstance(data, dict):
        raise AgentPermanentError(
            f"agent returned JSON {type(data).__name__}, expected an object (HTTP {status})", status=status
        )
    text = next((data[k] for k in TEXT_KEYS if isinstance(data.get(k), str) and data[k]), "")
    media = data.get("media")
    actions = data.get("actions")
    return AgentReply(
        text=text,
        media=media if isinstance(media, list) else [],
        actions=actions if isinstance(actions, list) else [],
        raw=data,
        status=status,
    )


class AgentClient:
    """Posts chat requests to agents over a shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        backoff: tuple[float, ...] = (0.1, 0.25),
        max_tries: int = DEFAULT_MAX_TRIES,
        tracer: trace.Tracer | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self._backoff = backoff
        self._max_tries = max(1, max_tries)
        self._tracer = tracer or trace.get_tracer("omni.router")
        self._max_response_bytes = max_response_bytes

    async def chat(
        self,
        base_url: str,
        api_key: str,
        body: dict[str, Any],
        *,
        budget: float,
        signing_secret: str = "",
        webhook_id: str = "",
    ) -> AgentReply:
        """POST `body` and return the reply; raises `AgentPermanentError` or `AgentTransientError`.

        With `signing_secret`, each attempt is signed (Standard Webhooks) with `webhook_id` (a fresh one if empty).
        """
        url = base_url.rstrip("/") + CHAT_PATH
        webhook_id = webhook_id or standard_webhooks.new_message_id()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        payload = orjson.dumps(body)
        with self._tracer.start_as_current_span("agent.call", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute(attrs.STEP, attrs.STEP_AGENT_CALL)
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("url.full", url)
            headers = {"Content-Type": "application/json"}
            if api_key:
                headers["x-api-key"] = api_key
            propagate.inject(headers)
            attempt = 0
            last_error = "no attempt made"
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                attempt += 1
                span.set_attribute("omni.agent.attempts", attempt)
                status = 0
                if signing_secret:
                    headers.update(standard_webhooks.headers_for(signing_secret, payload, msg_id=webhook_id))
                try:
                    async with self._session.post(
                        url,
                        data=payload,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=remaining),
                        allow_redirects=False,
                    ) as response:
                        status = response.status
                        span.set_attribute("http.response.status_code", status)
                        if is_redirect(status):
                            raise self._permanent(span, redirect_message(response, "agent"), status)
                        if 200 <= status < 300:
                            content = await read_capped(response, self._max_response_bytes)
                        else:  # only the start of an error body is ever shown
                            content = await response.content.read(ERROR_SNIPPET_BYTES)
                except ResponseTooLargeError as exc:
                    raise self._permanent(span, f"agent reply refused: {exc}", status) from None
                except AddressRefusedError as exc:
                    raise self._permanent(span, f"agent address refused: {exc}", 0) from None
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if 200 <= status < 300:
                        return parse_reply(content, status)
                    snippet = content.decode(errors="replace")
                    if status < 500:
                        raise self._permanent(span, f"agent returned HTTP {status}: {snippet}", status)
                    last_error = f"HTTP {status}: {snippet}"
                pause = self._backoff[min(attempt - 1, len(self._backoff) - 1)] if self._backoff else 0.0
                if attempt >= self._max_tries or deadline - loop.time() <= pause:
                    break
                log.debug("agent call attempt %d failed (%s); retrying in %.2fs", attempt, last_error, pause)
                await asyncio.sleep(pause)
            tries = "1 try" if attempt == 1 else f"{attempt} tries"
            message = f"agent unreachable after {tries} in {budget - (deadline - loop.time()):.1f}s: {last_error}"
            span.set_attribute(attrs.ERROR_MESSAGE, message)
            raise AgentTransientError(message)

    @staticmethod
    def _permanent(span: trace.Span, message: str, status: int) -> AgentPermanentError:
        """The permanent error to raise, recorded on the call's span."""
        span.set_attribute(attrs.ERROR_MESSAGE, message)
        return AgentPermanentError(message, status=status)
