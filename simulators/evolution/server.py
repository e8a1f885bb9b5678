"""`EvolutionSimulator`: the aiohttp app assembled from the endpoint modules, and its Python API for tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from simulators.evolution.control import ControlEndpoints
from simulators.evolution.directory import DirectoryBook, DirectoryEndpoints
from simulators.evolution.instances import InstanceEndpoints
from simulators.evolution.media import MediaEndpoints, StoredMedia
from simulators.evolution.messages import MessageEndpoints
from simulators.evolution.receipts import DEFAULT_STATUSES as DEFAULT_RECEIPT_STATUSES
from simulators.evolution.receipts import ReceiptEmitter
from simulators.evolution.rest import evolution_errors, json_response
from simulators.evolution.state import EvolutionState, Fault, SentMessage
from simulators.evolution.webhooks import WebhookDelivery, WebhookEndpoints


class EvolutionSimulator:
    """An in-process Evolution API server with recording and fault injection.

    Instances are created with `add_instance` (or `POST /instance/create`). Every request is authenticated
    like the real server: an unknown instance is 404 before the `apikey` is looked at, then the global key
    or the instance's own token is required.
    """

    def __init__(self, *, api_key: str = "sim-global-key", honor_delays: bool = False) -> None:
        """Args:
        api_key: The global `AUTHENTICATION_API_KEY`.
        honor_delays: Hold sends and presences open for their `delay` ms as Evolution does (off by default
            to keep tests fast).
        """
        self.state = EvolutionState(api_key=api_key, honor_delays=honor_delays)
        """Everything the endpoints know and recorded; the properties below are views of it."""
        self._webhooks = WebhookDelivery(self.state)
        self._receipts = ReceiptEmitter(self.state, self._webhooks)
        self._instances = InstanceEndpoints(self.state, self._webhooks)
        self._media = MediaEndpoints(self.state)
        self.directory = DirectoryBook()
        """The contacts and chats `findContacts`/`findChats` answer (see `seed_contacts`, `add_chat`)."""
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ recorded traffic and settings

    @property
    def url(self) -> str:
        """`http://host:port` once `start` returned, empty before."""
        return self.state.url

    @property
    def api_key(self) -> str:
        """The global `AUTHENTICATION_API_KEY`."""
        return self.state.api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        self.state.api_key = value

    @property
    def honor_delays(self) -> bool:
        """Whether sends and presences are held open for their `delay` ms."""
        return self.state.honor_delays

    @honor_delays.setter
    def honor_delays(self, value: bool) -> None:
        self.state.honor_delays = value

    @property
    def sent(self) -> list[SentMessage]:
        """Every accepted send, oldest first."""
        return self.state.sent

    @property
    def presences(self) -> list[dict[str, Any]]:
        """Every accepted `sendPresence` body (+ `instance`)."""
        return self.state.presences

    @property
    def requests(self) -> list[tuple[str, str]]:
        """`(method, path)` of every Evolution request (the `/__sim/*` ones are left out)."""
        return self.state.requests

    @property
    def reads(self) -> list[dict[str, Any]]:
        """Every key passed to `markMessageAsRead` (+ `instance`)."""
        return self.state.reads

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook POST attempt: `{event, instance, url, status}` (status None when it failed to connect)."""
        return self.state.deliveries

    @property
    def not_on_whatsapp(self) -> set[str]:
        """Numbers (digits) or JIDs that answer 400 `exists:false`, as for a number without WhatsApp."""
        return self.state.not_on_whatsapp

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on `host:port` (0 picks a free port); `url` is set when this returns."""
        self._runner = web.AppRunner(self._build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.state.url = f"http://{host}:{bound_port}"
        self._webhooks.open()

    async def stop(self) -> None:
        """Stop serving; webhook deliveries still in flight are cancelled."""
        await self._receipts.close()
        await self._webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ control API

    def add_instance(self, name: str, token: str | None = None, state: str = "open") -> str:
        """Create (or update) an instance and return its token; an existing instance keeps its webhook."""
        return self.state.add_instance(name, token, state)

    def set_state(self, name: str, state: str) -> None:
        """Move an instance to `open`/`connecting`/`close` and emit `connection.update` if subscribed."""
        self._instances.set_state(name, state)

    def webhook_of(self, name: str) -> dict[str, Any] | None:
        """The stored webhook row of an instance (what `GET /webhook/find` answers)."""
        return self.state.instances[name].webhook

    def settings_of(self, name: str) -> dict[str, Any] | None:
        """The stored settings of an instance (what `GET /settings/find` answers)."""
        return self.state.instances[name].settings

    def scan_qr(self, name: str, *, owner_jid: str = "", profile_name: str = "") -> None:
        """Play the phone scanning the QR: the instance (which must be connecting) opens with that account and
        `connection.update` open (wuid, profileName) goes to its webhook."""
        self._instances.scan_qr(name, owner_jid=owner_jid, profile_name=profile_name)

    def reach_qr_limit(self, name: str) -> None:
        """Emit the QR limit (`qrcode.updated` with the limit message, then `connection.update` refused)."""
        self._instances.reach_qr_limit(name)

    def fail_connection_actions(self, name: str, message: str = "") -> None:
        """Make `connect` and `restart` of the instance answer HTTP 200 `{error: true, message}` (Evolution's
        irregular failure shape) until called again with an empty message."""
        self.state.instances[name].action_error = message

    def fail_next(
        self,
        count: int,
        status: int = 500,
        body: Any | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        after_send: bool = False,
    ) -> None:
        """Make the next `count` sends (after auth and validation) fail.

        Args:
            count: How many consecutive sends fail.
            status: HTTP status of the failure.
            body: The whole response body (dict/list → JSON, str → raw text); the contract's error shape for
                `status` when None.
            retry_after: Seconds for a `Retry-After` header (formatted with `%g`, so 0.5 stays "0.5").
            delay: Seconds to sleep before answering, to provoke client timeouts.
            after_send: Record the message as sent (and post `send.message`) before failing: the
                "WhatsApp got it but the answer was lost" case.
        """
        fault = Fault(status=status, body=body, retry_after=retry_after, delay=delay, after_send=after_send)
        self.state.queue_faults(count, fault)

    def set_latency(self, seconds: float) -> None:
        """Add `seconds` of latency to every send."""
        self.state.set_latency(seconds)

    def reset(self) -> None:
        """Forget recorded traffic, pending faults and latency; instances and their webhooks stay."""
        self.state.reset()

    async def wait_for_sent(self, count: int, timeout: float = 5.0) -> list[SentMessage]:
        """Wait until at least `count` messages were sent; raise TimeoutError otherwise."""
        return await self.state.wait_for_sent(count, timeout)

    async def emit(self, name: str, event: str, data: Any) -> int | None:
        """POST an arbitrary event (e.g. a `messages.update` receipt) to the instance webhook and wait.

        Returns the HTTP status, or None when the instance has no enabled webhook subscribed to `event` or
        the POST failed.
        """
        return await self._webhooks.emit_and_wait(self.state.instances[name], event, data)

    async def deliver_receipts(
        self, key_id: str, statuses: Sequence[str] = DEFAULT_RECEIPT_STATUSES
    ) -> list[int | None]:
        """POST `messages.update` receipts (e.g. DELIVERY_ACK then READ) for the sent message `key_id` and wait;
        returns each POST's HTTP status (None when not subscribed to MESSAGES_UPDATE or failed)."""
        return await self._receipts.deliver(key_id, statuses)

    @property
    def auto_receipts(self) -> tuple[str, ...]:
        """Receipt statuses posted after every send, in the background; empty (the default) posts none."""
        return self._receipts.auto_statuses

    @auto_receipts.setter
    def auto_receipts(self, statuses: Sequence[str]) -> None:
        self._receipts.auto_statuses = tuple(statuses)

    def seed_contacts(self, name: str, count: int, *, name_prefix: str = "Contact") -> list[dict[str, Any]]:
        """Add `count` phone contacts to instance `name` (rows as `findContacts` answers them); callable while a
        test pages, to grow the address book between requests."""
        return self.directory.seed_contacts(name, count, name_prefix=name_prefix)

    def add_contact(self, name: str, remote_jid: str, push_name: str | None = None, **fields: Any) -> dict[str, Any]:
        """Add one contact (`contact_type` "contact", "group" or "group_member"; `profile_pic_url`)."""
        return self.directory.add_contact(name, remote_jid, push_name, **fields)

    def add_chat(self, name: str, remote_jid: str, chat_name: str | None = None, **fields: Any) -> dict[str, Any]:
        """Add one chat (`unread_count`, `last_text`, `last_timestamp`, `profile_pic_url`)."""
        return self.directory.add_chat(name, remote_jid, chat_name, **fields)

    def store_media(
        self,
        key_id: str,
        data: bytes,
        mimetype: str,
        *,
        instance: str | None = None,
        file_name: str = "",
        caption: str = "",
    ) -> None:
        """Make the simulated account have received the file of message `key_id` (for `instance` only, when given),
        so `getBase64FromMediaMessage` answers it; any other key id is "Message not found"."""
        self._media.store(key_id, StoredMedia(data, mimetype, instance, file_name, caption))

    @property
    def media_fetches(self) -> list[dict[str, Any]]:
        """Every `getBase64FromMediaMessage` body (+ `instance`), oldest first."""
        return self._media.fetches

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[evolution_errors(self.state)], client_max_size=136 * 1024 * 1024)
        app.router.add_get("/", self._welcome)
        app.add_routes(MessageEndpoints(self.state, self._webhooks, self._receipts.after_send).routes())
        app.add_routes(self._instances.routes())
        app.add_routes(self._media.routes())
        app.add_routes(WebhookEndpoints(self.state).routes())
        app.add_routes(ControlEndpoints(self.state, self._instances.scan_qr, self._receipts).routes())
        app.add_routes(DirectoryEndpoints(self.state, self.directory).routes())
        return app

    async def _welcome(self, request: web.Request) -> web.StreamResponse:
        """`GET /`: the real server's greeting."""
        return json_response(
            {
                "status": 200,
                "message": "Welcome to the Evolution API, it is working!",
                "version": "2.3.7",
                "clientName": "evolution_simulator",
                "manager": f"{self.url}/manager",
                "documentation": "https://doc.evolution-api.com",
            }
        )
