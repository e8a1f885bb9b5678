"""Webhooks: the per-instance config endpoints (`/webhook/set`, `/webhook/find`) and the POST of events.

An event goes out only when the instance's webhook is enabled and subscribed to it (§1.2), to `url` or, with
`webhookByEvents`, to `url/<event-suffix>`, in the envelope and headers of §1.3/§1.4. Each event is POSTed
once, without retries; every attempt is recorded in `EvolutionState.deliveries`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from simulators.evolution.rest import EvolutionError, authorize, json_response, read_body, required
from simulators.evolution.state import EvolutionState, Instance
from simulators.evolution.wire import (
    ALL_EVENTS,
    HTTP_URL,
    by_events_suffix,
    envelope,
    iso_now,
    new_record_id,
    subscription_name,
    webhook_headers,
)

log = logging.getLogger(__name__)


def webhook_row(instance: Instance, config: dict[str, Any]) -> dict[str, Any]:
    """The stored webhook of `instance` for a `webhook/set` (or `instance/create`) config; 400 on unknown events."""
    events = config.get("events") or []
    unknown = [e for e in events if e not in ALL_EVENTS]
    if unknown:
        raise EvolutionError(400, [f"webhook.events must be equal to one of the allowed values: {unknown[0]}"])
    enabled = bool(config.get("enabled"))
    if not enabled:
        events = []
    elif not events:
        events = list(ALL_EVENTS)
    now = iso_now()
    previous = instance.webhook or {}
    headers = config.get("headers")
    return {
        "id": previous.get("id") or new_record_id(),
        "url": str(config.get("url")),
        "headers": headers if isinstance(headers, dict) else {},
        "enabled": enabled,
        "events": list(events),
        "webhookByEvents": bool(config.get("byEvents", False)),
        "webhookBase64": bool(config.get("base64", False)),
        "createdAt": previous.get("createdAt") or now,
        "updatedAt": now,
        "instanceId": instance.instance_id,
    }


class WebhookEndpoints:
    """`POST /webhook/set/{instance}` and `GET /webhook/find/{instance}`."""

    def __init__(self, state: EvolutionState) -> None:
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/webhook/set/{instance}", self._webhook_set),
            web.get("/webhook/find/{instance}", self._webhook_find),
        ]

    async def _webhook_set(self, request: web.Request) -> web.StreamResponse:
        """§1.1: the v2 body is wrapped in `webhook`; a missing `events` crashes the real server (500)."""
        instance = authorize(self._state, request)
        body = await read_body(request)
        required(body, "webhook")
        config = body["webhook"]
        if not isinstance(config, dict):
            raise EvolutionError(400, ["instance.webhook must be object"])
        for name in ("enabled", "url"):
            if name not in config:
                raise EvolutionError(400, [f'instance.webhook requires property "{name}"'])
        if not isinstance(config.get("events"), list):
            raise EvolutionError(500, ["TypeError: Cannot read properties of undefined (reading 'length')"])
        instance.webhook = webhook_row(instance, config)
        return json_response(instance.webhook, 201)

    async def _webhook_find(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        return json_response(instance.webhook)


class WebhookDelivery:
    """POSTs events to the instances' webhooks through one client session, open while the simulator serves."""

    def __init__(self, state: EvolutionState) -> None:
        self._state = state
        self._tasks: set[asyncio.Task[int | None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Start delivering (called once the simulator serves; events emitted before are dropped)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        """Stop delivering; deliveries still in flight are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def emit(self, instance: Instance, event: str, data: Any) -> None:
        """Fire-and-forget: the POST runs in a background task and never delays the REST answer."""
        target = self._target(instance, event, data)
        if target is None or self._session is None:
            return
        url, body, headers = target
        task = asyncio.get_running_loop().create_task(self._deliver(instance.name, event, url, body, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def emit_and_wait(self, instance: Instance, event: str, data: Any) -> int | None:
        """POST `event` now and return the HTTP status; None when not subscribed or the POST failed."""
        target = self._target(instance, event, data)
        if target is None:
            return None
        url, body, headers = target
        return await self._deliver(instance.name, event, url, body, headers)

    def _target(self, instance: Instance, event: str, data: Any) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        """URL, envelope and headers for `event`, or None when the instance webhook would not send it."""
        hook = instance.webhook
        if hook is None or not hook.get("enabled") or subscription_name(event) not in hook["events"]:
            return None
        url = str(hook["url"])
        if not HTTP_URL.match(url):
            return None
        target = f"{url.rstrip('/')}/{by_events_suffix(event)}" if hook["webhookByEvents"] else url
        sender = instance.owner_jid if event != "qrcode.updated" else None
        body = envelope(event, instance.name, data, destination=url, sender=sender, server_url=self._state.url)
        return target, body, webhook_headers(hook.get("headers"))

    async def _deliver(
        self, instance: str, event: str, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> int | None:
        status: int | None = None
        if self._session is not None:
            try:
                async with self._session.post(url, data=orjson.dumps(body), headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("webhook %s to %s failed: %s", event, url, exc)
        self._state.deliveries.append({"event": event, "instance": instance, "url": url, "status": status})
        return status
