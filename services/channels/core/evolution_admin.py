"""Evolution's instance-level API (its contract §4.4): provisioning, delete, connect/restart/logout, listing.

Which key each call uses, and why:
- listing and creating need the server's global key: the instance's `evolution_key` (or the deployment's
  `EVOLUTION_API_KEY`); an instance token only sees its own instance, which is enough to find it;
- calls on the instance use its own token when Omni stored one (it reaches that instance only), else the key
  (`senders.whatsapp.ready_instance`).

Evolution's irregular errors are normalised here: `connect` and `restart` answer HTTP 200 `{error: true}` on
failure, and logout answers 400 "not connected"; both become errors with Evolution's own words, never a fake
success.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from servicekit.channels import Channel
from servicekit.instances import Instance, WhatsAppConfig
from services.channels.core.connections import (
    ActionResult,
    ConnectionAction,
    GatewayServer,
    NotConnectedError,
    Provisioned,
    RemoteInstance,
    normalized_url,
)
from services.channels.core.evolution import (
    REASON_INSTANCE_NOT_FOUND,
    REASON_UNAUTHORIZED,
    EvolutionClient,
    error_text,
)
from services.channels.core.models import ConnectionState, ConnectionStatus
from services.channels.core.senders.base import REASON_MISCONFIGURED, ChannelRejectedError
from services.channels.core.senders.whatsapp import WEBHOOK_SECRET_HEADER, ready_instance, webhook_events

INTEGRATION = "WHATSAPP-BAILEYS"
_DATA_URL_PNG = "data:image/png;base64,"

EVOLUTION_STATES = {
    "open": ConnectionState.CONNECTED,
    "connecting": ConnectionState.CONNECTING,
    "close": ConnectionState.DISCONNECTED,
    "refused": ConnectionState.ERROR,
}


def instance_settings(instance: Instance) -> dict[str, bool]:
    """The six booleans `settings/set` requires (and `instance/create` takes). Groups are ignored at the source when
    the instance never answers them, which spares a webhook per group message; everything else stays as a phone
    would behave (calls ring, nothing is marked read behind the user's back, no full-history sync burst)."""
    return {
        "rejectCall": False,
        "groupsIgnore": instance.group_reply == "never",
        "alwaysOnline": False,
        "readMessages": False,
        "readStatus": False,
        "syncFullHistory": False,
    }


def _qr(body: dict[str, Any]) -> tuple[str, str]:
    """(raw base64 PNG, pairing code) of a QR answer; the PNG loses its data: prefix."""
    return str(body.get("base64") or "").removeprefix(_DATA_URL_PNG), str(body.get("pairingCode") or "")


def _row_name(row: dict[str, Any]) -> str:
    """An instance row's name: v2 `name`, v1.8 `instance.instanceName`."""
    inner = row.get("instance")
    if isinstance(inner, dict):
        return str(inner.get("instanceName") or "")
    return str(row.get("name") or "")


def _row_field(row: dict[str, Any], v2: str, v1: str) -> str:
    inner = row.get("instance")
    value = inner.get(v1) if isinstance(inner, dict) else row.get(v2)
    return str(value) if value else ""


class EvolutionAdmin:
    """`connections.GatewayAdmin` for WhatsApp instances behind Evolution API servers."""

    channel = Channel.WHATSAPP

    def __init__(
        self, client: EvolutionClient, *, fallback_key: str = "", default_url: str = "", receipts: bool = True
    ) -> None:
        self._client = client
        self._fallback_key = fallback_key
        self._default_url = default_url
        self._events = webhook_events(receipts=receipts)

    # ------------------------------------------------------------------ provisioning

    async def provision(self, instance: Instance, webhook_url: str) -> Provisioned:
        """Adopt the Evolution instance when it exists (webhook/set + settings/set), else create it with the webhook
        (instance/create, which issues the instance token Omni keeps)."""
        config = self._config(instance)
        webhook = {
            "url": webhook_url,
            "byEvents": False,
            "base64": False,
            "headers": {WEBHOOK_SECRET_HEADER: instance.webhook_secret} if instance.webhook_secret else {},
            "events": self._events,
        }
        existing = await self._find(config)
        if existing is not None:
            ready = ready_instance(instance, self._fallback_key)
            await self._on_instance(ready, "POST", "webhook/set", {"webhook": {"enabled": True, **webhook}})
            await self._on_instance(ready, "POST", "settings/set", instance_settings(instance))
            return Provisioned(provisioned=True, created=False, remote_id=str(existing.get("id") or ""))
        body = {
            "instanceName": config.whatsapp_instance,
            "integration": INTEGRATION,
            "qrcode": True,
            **instance_settings(instance),
            "webhook": webhook,
        }
        answer = await self._client.request_url(
            "POST", f"{self._base(config)}/instance/create", self._admin_key(config), body
        )
        answer = answer if isinstance(answer, dict) else {}
        token = answer.get("hash")
        if isinstance(token, dict):  # v1.8: {"apikey": "..."}
            token = token.get("apikey")
        created = answer.get("instance")
        qrcode = answer.get("qrcode")
        qr_code, pairing_code = _qr(qrcode) if isinstance(qrcode, dict) else ("", "")
        return Provisioned(
            provisioned=True,
            created=True,
            instance_token=str(token or ""),
            remote_id=str(created.get("instanceId") or "") if isinstance(created, dict) else "",
            qr_code=qr_code,
            pairing_code=pairing_code,
        )

    async def delete_remote(self, instance: Instance) -> bool:
        """instance/delete; an instance already gone (404) is not an error."""
        try:
            await self._on_instance(ready_instance(instance, self._fallback_key), "DELETE", "instance/delete")
        except ChannelRejectedError as exc:
            if exc.reason == REASON_INSTANCE_NOT_FOUND:
                return False
            raise
        return True

    # ------------------------------------------------------------------ connection actions

    async def act(self, instance: Instance, action: ConnectionAction, phone_number: str) -> ActionResult:
        ready = ready_instance(instance, self._fallback_key)
        if action is ConnectionAction.CONNECT:
            return await self._connect(ready, phone_number)
        if action is ConnectionAction.RESTART:
            body = await self._on_instance(ready, "POST", "instance/restart")
            _raise_if_error(body)
            inner = body.get("instance") if isinstance(body, dict) else None
            raw = str((inner.get("state") or inner.get("status") or "") if isinstance(inner, dict) else "")
            raw = raw or "connecting"
            state = EVOLUTION_STATES.get(raw, ConnectionState.CONNECTING)
            return ActionResult(ConnectionStatus(state=state, raw_state=raw), message="restarting")
        try:
            body = await self._on_instance(ready, "DELETE", "instance/logout")
        except ChannelRejectedError as exc:
            if exc.status == 400 and "not connected" in exc.message:
                raise NotConnectedError(exc.message, status=400) from None
            raise
        _raise_if_error(body)
        return ActionResult(
            ConnectionStatus(state=ConnectionState.DISCONNECTED, raw_state="close", detail="logged out"),
            message=error_text(body) or "Instance logged out",
        )

    async def _connect(self, instance: Instance, phone_number: str) -> ActionResult:
        config = instance.config_of(WhatsAppConfig)
        query = f"?{urlencode({'number': phone_number})}" if phone_number else ""
        url = f"{self._base(config)}/instance/connect/{quote(config.whatsapp_instance, safe='')}{query}"
        body = await self._client.request_url("GET", url, config.evolution_key)
        _raise_if_error(body)
        body = body if isinstance(body, dict) else {}
        inner = body.get("instance")
        if isinstance(inner, dict):
            raw = str(inner.get("state") or "")
            state = EVOLUTION_STATES.get(raw, ConnectionState.ERROR)
            return ActionResult(ConnectionStatus(state=state, raw_state=raw), message=f"already {raw}")
        qr_code, pairing_code = _qr(body)
        message = "scan the QR code" if qr_code else "the QR code is not ready yet; ask again in a moment"
        if pairing_code:
            message = "enter the pairing code on the phone"
        return ActionResult(
            ConnectionStatus(
                state=ConnectionState.CONNECTING, raw_state="connecting", qr_code=qr_code, pairing_code=pairing_code
            ),
            message=message,
        )

    # ------------------------------------------------------------------ discovery

    def servers(self, instances: Iterable[Instance]) -> list[GatewayServer]:
        found: dict[tuple[str, str], GatewayServer] = {}
        for instance in instances:
            config = instance.config
            if not isinstance(config, WhatsAppConfig) or not config.evolution_url:
                continue
            key = config.evolution_key or self._fallback_key or config.instance_token
            found.setdefault((normalized_url(config.evolution_url), key), GatewayServer(config.evolution_url, key))
        if self._default_url:
            default = GatewayServer(self._default_url, self._fallback_key)
            found.setdefault((normalized_url(default.url), default.key), default)
        return list(found.values())

    def manages(self, instance: Instance) -> tuple[str, str] | None:
        config = instance.config
        if not isinstance(config, WhatsAppConfig):
            return None
        return config.evolution_url, config.whatsapp_instance

    async def list_remote(self, server: GatewayServer) -> list[RemoteInstance]:
        rows = await self._client.request_url(
            "GET", f"{server.url.rstrip('/')}/instance/fetchInstances", server.key or self._fallback_key
        )
        listed: list[RemoteInstance] = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or not _row_name(row):
                continue
            raw = _row_field(row, "connectionStatus", "status")
            listed.append(
                RemoteInstance(
                    name=_row_name(row),
                    server_url=server.url.rstrip("/"),
                    state=EVOLUTION_STATES.get(raw, ConnectionState.ERROR),
                    raw_state=raw,
                    owner_jid=_row_field(row, "ownerJid", "owner"),
                    profile_name=_row_field(row, "profileName", "profileName"),
                    remote_id=_row_field(row, "id", "instanceId"),
                )
            )
        return listed

    # ------------------------------------------------------------------ plumbing

    def _config(self, instance: Instance) -> WhatsAppConfig:
        config = instance.config
        if not isinstance(config, WhatsAppConfig) or not (config.evolution_url and config.whatsapp_instance):
            raise ChannelRejectedError(
                f"instance {instance.name!r} has no Evolution URL or WhatsApp instance name",
                reason=REASON_MISCONFIGURED,
            )
        return config

    def _admin_key(self, config: WhatsAppConfig) -> str:
        return config.evolution_key or self._fallback_key or config.instance_token

    @staticmethod
    def _base(config: WhatsAppConfig) -> str:
        return config.evolution_url.rstrip("/")

    async def _find(self, config: WhatsAppConfig) -> dict[str, Any] | None:
        """The instance's fetchInstances row, None when Evolution has no such instance (404). The instance token is
        tried first (it keeps working when the server's global key was rotated), then the server key."""
        url = f"{self._base(config)}/instance/fetchInstances?{urlencode({'instanceName': config.whatsapp_instance})}"
        keys = list(dict.fromkeys(k for k in (config.instance_token, self._admin_key(config)) if k)) or [""]
        for attempt, key in enumerate(keys, start=1):
            try:
                rows = await self._client.request_url("GET", url, key)
                break
            except ChannelRejectedError as exc:
                if exc.reason == REASON_INSTANCE_NOT_FOUND:
                    return None
                if exc.reason != REASON_UNAUTHORIZED or attempt == len(keys):
                    raise
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and _row_name(row) == config.whatsapp_instance:
                return row
        return None

    async def _on_instance(
        self, instance: Instance, method: str, action: str, body: dict[str, Any] | None = None
    ) -> Any:
        config = instance.config_of(WhatsAppConfig)
        url = f"{self._base(config)}/{action}/{quote(config.whatsapp_instance, safe='')}"
        return await self._client.request_url(method, url, config.evolution_key, body)


def _raise_if_error(body: Any) -> None:
    """Evolution's HTTP 200 `{error: true, message}` (connect, restart, logout) as the refusal it is."""
    if isinstance(body, dict) and body.get("error") is True:
        raise ChannelRejectedError(error_text(body) or "Evolution reported an error", status=200)
