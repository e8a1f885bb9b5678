"""Instance lifecycle endpoints: create, fetchInstances, connect (QR), connectionState, logout, delete, restart,
and the instance settings (`settings/set`, `settings/find`).

A state change (`open`/`connecting`/`close`) emits `connection.update`, and a QR emits `qrcode.updated`, to a
subscribed webhook, as on the real server. `scan_qr` plays the phone that scans the QR (the instance opens), and
`reach_qr_limit` the QR limit (`qrcode.updated` with the limit message, then `connection.update` refused).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from aiohttp import web

from simulators.evolution.rest import (
    EvolutionError,
    authorize,
    json_response,
    read_body,
    require_global_key,
    required,
)
from simulators.evolution.state import EvolutionState, Instance
from simulators.evolution.webhooks import WebhookDelivery, webhook_row
from simulators.evolution.wire import TINY_PNG_BASE64

SETTING_FLAGS = ("rejectCall", "groupsIgnore", "alwaysOnline", "readMessages", "readStatus", "syncFullHistory")
"""The booleans `settings/set` requires."""


class InstanceEndpoints:
    """The `/instance/*` endpoints, and `set_state` which they share with the Python API."""

    def __init__(self, state: EvolutionState, webhooks: WebhookDelivery) -> None:
        self._state = state
        self._webhooks = webhooks

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/instance/connectionState/{instance}", self._connection_state),
            web.get("/instance/connect/{instance}", self._connect),
            web.post("/instance/create", self._create),
            web.get("/instance/fetchInstances", self._fetch_instances),
            web.delete("/instance/logout/{instance}", self._logout),
            web.delete("/instance/delete/{instance}", self._delete),
            web.post("/instance/restart/{instance}", self._restart),
            web.post("/settings/set/{instance}", self._settings_set),
            web.get("/settings/find/{instance}", self._settings_find),
        ]

    def set_state(self, name: str, state: str) -> None:
        """Move an instance to `open`/`connecting`/`close` and emit `connection.update` if subscribed."""
        instance = self._state.instances[name]
        instance.state = state
        self._webhooks.emit(instance, "connection.update", self._connection_data(instance))

    def scan_qr(self, name: str, *, owner_jid: str = "", profile_name: str = "") -> None:
        """The phone scanned the QR (or entered the pairing code): the instance opens with that account."""
        instance = self._state.instances[name]
        if instance.state != "connecting":
            raise ValueError(f"instance {name!r} shows no QR (state {instance.state!r})")
        instance.owner_jid = owner_jid or instance.owner_jid
        instance.profile_name = profile_name or instance.profile_name
        self.set_state(name, "open")

    def reach_qr_limit(self, name: str) -> None:
        """Nobody scanned in time: Evolution's QR limit event, then the refused state (its contract §3)."""
        instance = self._state.instances[name]
        message = {"message": "QR code limit reached, please login again", "statusCode": 500}
        self._webhooks.emit(instance, "qrcode.updated", message)
        instance.state = "close"
        data = {"instance": instance.name, "state": "refused", "statusReason": 428}
        self._webhooks.emit(instance, "connection.update", data)

    @staticmethod
    def _connection_data(instance: Instance) -> dict[str, Any]:
        if instance.state == "open":
            return {
                "instance": instance.name,
                "wuid": instance.owner_jid,
                "profileName": instance.profile_name,
                "profilePictureUrl": None,
                "state": "open",
                "statusReason": 200,
            }
        return {
            "instance": instance.name,
            "state": instance.state,
            "statusReason": 401 if instance.state == "close" else 200,
        }

    async def _connection_state(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        return json_response({"instance": {"instanceName": instance.name, "state": instance.state}})

    @staticmethod
    def _qr(instance: Instance, number: str | None) -> dict[str, Any]:
        instance.qr_count += 1
        alphabet = "ABCDEFGHJKLMNPQRSTVWXYZ0123456789"
        return {
            "pairingCode": "".join(secrets.choice(alphabet) for _ in range(8)) if number else None,
            "code": "2@" + base64.b64encode(secrets.token_bytes(48)).decode() + "," + secrets.token_urlsafe(32),
            "base64": f"data:image/png;base64,{TINY_PNG_BASE64}",
            "count": instance.qr_count,
        }

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        if instance.action_error:
            return json_response({"error": True, "message": instance.action_error})
        if instance.state == "open":
            return json_response({"instance": {"instanceName": instance.name, "state": "open"}})
        if instance.state == "close":
            self.set_state(instance.name, "connecting")
        qr = self._qr(instance, request.query.get("number"))
        self._webhooks.emit(instance, "qrcode.updated", {"qrcode": {"instance": instance.name, **qr}})
        return json_response(qr)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        require_global_key(self._state, request)
        body = await read_body(request)
        required(body, "instanceName")
        name = str(body["instanceName"])
        if body.get("integration") != "WHATSAPP-BAILEYS":
            raise EvolutionError(400, ["Invalid integration"])
        if name in self._state.instances:
            raise EvolutionError(403, [f'This name "{name}" is already in use.'])
        webhook = body.get("webhook")
        if isinstance(webhook, dict) and webhook.get("url") and not isinstance(webhook.get("events"), list):
            raise EvolutionError(400, ["TypeError: Cannot read properties of undefined (reading 'length')"])
        with_qr = bool(body.get("qrcode"))
        token = self._state.add_instance(
            name, str(body.get("token") or "") or None, "connecting" if with_qr else "close"
        )
        instance = self._state.instances[name]
        instance.settings = {flag: bool(body.get(flag, False)) for flag in SETTING_FLAGS}
        instance.settings["msgCall"] = str(body.get("msgCall", ""))
        webhook_summary: dict[str, Any] = {}
        if isinstance(webhook, dict) and webhook.get("url"):
            instance.webhook = webhook_row(instance, {**webhook, "enabled": True})
            webhook_summary = {
                "webhookUrl": instance.webhook["url"],
                "webhookHeaders": instance.webhook["headers"],
                "webhookByEvents": instance.webhook["webhookByEvents"],
                "webhookBase64": instance.webhook["webhookBase64"],
            }
        answer: dict[str, Any] = {
            "instance": {
                "instanceName": name,
                "instanceId": instance.instance_id,
                "integration": "WHATSAPP-BAILEYS",
                "webhookWaBusiness": None,
                "accessTokenWaBusiness": "",
                "status": instance.state,
            },
            "hash": token,
            "webhook": webhook_summary,
            "websocket": {},
            "rabbitmq": {},
            "nats": {},
            "sqs": {},
            "settings": {
                "rejectCall": bool(body.get("rejectCall", False)),
                "msgCall": str(body.get("msgCall", "")),
                "groupsIgnore": bool(body.get("groupsIgnore", False)),
                "alwaysOnline": bool(body.get("alwaysOnline", False)),
                "readMessages": bool(body.get("readMessages", False)),
                "readStatus": bool(body.get("readStatus", False)),
                "syncFullHistory": bool(body.get("syncFullHistory", False)),
                "wavoipToken": "",
            },
        }
        if with_qr:
            answer["qrcode"] = self._qr(instance, str(body["number"]) if body.get("number") else None)
        return json_response(answer, 201)

    def _instance_row(self, instance: Instance) -> dict[str, Any]:
        messages = sum(1 for s in self._state.sent if s.instance == instance.name)
        return {
            "id": instance.instance_id,
            "name": instance.name,
            "connectionStatus": instance.state,
            "ownerJid": instance.owner_jid if instance.state == "open" else None,
            "profileName": instance.profile_name,
            "profilePicUrl": None,
            "integration": "WHATSAPP-BAILEYS",
            "number": None,
            "businessId": None,
            "token": instance.token,
            "clientName": "evolution_simulator",
            "disconnectionReasonCode": None,
            "disconnectionObject": None,
            "disconnectionAt": None,
            "createdAt": instance.created_at,
            "updatedAt": instance.created_at,
            "Chatwoot": None,
            "Proxy": None,
            "Rabbitmq": None,
            "Nats": None,
            "Sqs": None,
            "Websocket": None,
            "Setting": {**instance.settings, "instanceId": instance.instance_id} if instance.settings else None,
            "_count": {"Message": messages, "Contact": 0, "Chat": 0},
        }

    async def _fetch_instances(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("apikey")
        if key == self._state.api_key:
            visible = list(self._state.instances.values())
        else:
            visible = [i for i in self._state.instances.values() if i.token == key]
            if not visible:
                raise EvolutionError(401, "Unauthorized")
        wanted_name, wanted_id = request.query.get("instanceName"), request.query.get("instanceId")
        if wanted_name is not None:
            visible = [i for i in visible if i.name == wanted_name]
            if not visible:
                raise EvolutionError(404, [f'The "{wanted_name}" instance does not exist'])
        if wanted_id is not None:
            visible = [i for i in visible if i.instance_id == wanted_id]
        return json_response([self._instance_row(i) for i in visible])

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        if instance.state == "close":
            raise EvolutionError(400, [f'The "{instance.name}" instance is not connected'])
        self.set_state(instance.name, "close")
        return json_response({"status": "SUCCESS", "error": False, "response": {"message": "Instance logged out"}})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        del self._state.instances[instance.name]
        return json_response({"status": "SUCCESS", "error": False, "response": {"message": "Instance deleted"}})

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        """A connected instance reconnects at once with its stored credentials; a closed one needs a QR."""
        instance = authorize(self._state, request)
        if instance.action_error:
            return json_response({"error": True, "message": instance.action_error})
        if instance.state == "close":
            self.set_state(instance.name, "connecting")
        return json_response({"instance": {"instanceName": instance.name, "status": "connecting"}})

    async def _settings_set(self, request: web.Request) -> web.StreamResponse:
        """§4.4: the six booleans are required (the JSON Schema's own messages); `msgCall` is optional."""
        instance = authorize(self._state, request)
        body = await read_body(request)
        required(body, *SETTING_FLAGS)
        for flag in SETTING_FLAGS:
            if not isinstance(body[flag], bool):
                raise EvolutionError(400, [f"instance.{flag} must be boolean"])
        instance.settings = {flag: body[flag] for flag in SETTING_FLAGS}
        instance.settings["msgCall"] = str(body.get("msgCall", ""))
        return json_response({"settings": {"instanceName": instance.name, **instance.settings}}, 201)

    async def _settings_find(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        return json_response(instance.settings)
