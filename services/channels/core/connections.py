"""Instances' connections to their channel gateways: provisioning, the connect/restart/logout actions, discovery of
unmanaged gateway instances, and the connection state the gateway reported.

Why a recorded state: Evolution tells the hub about every connection change and every fresh login QR
(`connection.update`, `qrcode.updated`, received by ingress). Keeping the last one per instance lets status and QR
reads answer at once, without a round trip to Evolution that is slow, may be down, and (for a QR) would start a new
login. A read falls back to asking the gateway only when nothing usable is recorded.

Nothing here names a channel: each channel that can be administered by API plugs a `GatewayAdmin` in; the others
answer "not provisioned" or FAILED_PRECONDITION.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from servicekit.channels import Channel
from servicekit.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    UnavailableError,
)
from servicekit.instances import Instance, InstanceDirectory
from services.channels.core.models import ConnectionState, ConnectionStatus
from services.channels.core.senders.base import ChannelError, ChannelRejectedError

log = logging.getLogger(__name__)

REASON_ACCOUNT_REJECTED = "ACCOUNT_REJECTED"
REASON_GATEWAY_REFUSED = "CHANNEL_REJECTED"
"""The gateway refused an action: the `CHANNEL_` prefix makes the REST edge answer 502 with the gateway's words."""
REASON_GATEWAY_UNAVAILABLE = "CHANNEL_UNAVAILABLE"
REASON_NOT_CONNECTED = "NOT_CONNECTED"
REASON_NO_SUCH_ACTION = "CONNECTION_ACTION_NOT_SUPPORTED"

UPSTREAM_METADATA = "upstream"
"""ErrorInfo metadata key naming the channel gateway whose failure an error reports (value: the channel), so the
REST edge answers 502 Bad Gateway with the gateway's reason rather than blaming the request (422)."""

QR_FRESH_SECONDS = 90.0
"""How long a recorded QR is served without asking the gateway. Evolution sends a new one at each rotation (well
under a minute) and a limit event at the end; past this, a missed webhook is the likelier story."""
MEMORY_FRESH_SECONDS = 2.0
"""How long this replica trusts its in-memory copy of a record before reading the shared table again (another
replica may have recorded a newer event)."""


class ConnectionAction(enum.StrEnum):
    """What ManageConnection does."""

    CONNECT = "connect"
    RESTART = "restart"
    LOGOUT = "logout"
    """Evolution logout; refused (409) when the account is not connected; forgets the recorded QR and account."""
    DISCONNECT = "disconnect"
    """The same logout, but idempotent: an account that is not connected is already where the caller wants it."""


@dataclass(frozen=True)
class ConnectionEvent:
    """What a gateway said about an instance's connection. `state` None keeps the last one (a QR event)."""

    state: ConnectionState | None = None
    raw_state: str = ""
    qr_code: str = ""
    pairing_code: str = ""
    detail: str = ""
    account_id: str = ""
    account_name: str = ""
    occurred_at: float = 0.0
    """When the gateway reported it (epoch seconds); 0 means now. An event older than the recorded one is ignored."""


@dataclass(frozen=True)
class ConnectionRecord:
    """The last known connection of one instance, as stored."""

    instance_name: str
    state: ConnectionState
    raw_state: str = ""
    qr_code: str = ""
    pairing_code: str = ""
    detail: str = ""
    account_id: str = ""
    account_name: str = ""
    occurred_at: float = 0.0
    qr_at: float = 0.0
    """When the QR was recorded (local clock), to stop serving a QR whose rotation we may have missed."""

    def status(self) -> ConnectionStatus:
        return ConnectionStatus(
            state=self.state,
            raw_state=self.raw_state,
            qr_code=self.qr_code,
            pairing_code=self.pairing_code,
            detail=self.detail,
            account_id=self.account_id,
            account_name=self.account_name,
        )


class ConnectionRecords(Protocol):
    """Where connection records live (`storage.ConnectionStateStore` on SQLite/PostgreSQL)."""

    async def get(self, instance_name: str) -> ConnectionRecord | None: ...

    async def save(self, record: ConnectionRecord) -> bool:
        """Store `record` unless a record with a later `occurred_at` is there; False when it lost to that one."""
        ...

    async def delete(self, instance_name: str) -> int: ...

    async def count_by_state(self) -> dict[str, int]: ...


class MemoryConnectionRecords:
    """`ConnectionRecords` in a dict: for a core run without a database (unit tests, tools)."""

    def __init__(self) -> None:
        self.records: dict[str, ConnectionRecord] = {}

    async def get(self, instance_name: str) -> ConnectionRecord | None:
        return self.records.get(instance_name)

    async def save(self, record: ConnectionRecord) -> bool:
        current = self.records.get(record.instance_name)
        if current is not None and current.occurred_at > record.occurred_at:
            return False
        self.records[record.instance_name] = record
        return True

    async def delete(self, instance_name: str) -> int:
        return 1 if self.records.pop(instance_name, None) is not None else 0

    async def count_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records.values():
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        return counts


def merge(last: ConnectionRecord | None, name: str, event: ConnectionEvent, *, now: float) -> ConnectionRecord:
    """The record after `event`: a fresh QR means a login is under way (connecting), leaving the connecting state
    drops the QR (it is useless once connected, closed or refused), and the account is only shown while connected."""
    has_qr = bool(event.qr_code or event.pairing_code)
    state = event.state or (ConnectionState.CONNECTING if has_qr or last is None else last.state)
    record = ConnectionRecord(
        instance_name=name,
        state=state,
        raw_state=event.raw_state
        or ("connecting" if has_qr and event.state is None else last.raw_state if last and event.state is None else ""),
        detail=event.detail,
        occurred_at=event.occurred_at or now,
    )
    if state is ConnectionState.CONNECTED:
        keep_account = last is not None and last.state is ConnectionState.CONNECTED
        return dataclasses.replace(
            record,
            account_id=event.account_id or (last.account_id if keep_account and last else ""),
            account_name=event.account_name or (last.account_name if keep_account and last else ""),
        )
    if state is not ConnectionState.CONNECTING:
        return record
    if has_qr:
        return dataclasses.replace(record, qr_code=event.qr_code, pairing_code=event.pairing_code, qr_at=now)
    if last is not None and last.state is ConnectionState.CONNECTING:
        return dataclasses.replace(record, qr_code=last.qr_code, pairing_code=last.pairing_code, qr_at=last.qr_at)
    return record


class ConnectionBook:
    """The recorded connection states: the shared table, with this replica's in-memory copy in front of it."""

    def __init__(self, records: ConnectionRecords, *, clock: Callable[[], float] = time.time) -> None:
        self._records = records
        self._clock = clock
        self._memory: dict[str, tuple[float, ConnectionRecord | None]] = {}

    async def record(self, instance_name: str, event: ConnectionEvent) -> ConnectionRecord:
        """Apply `event` to the instance's record; an event older than the recorded one changes nothing."""
        now = self._clock()
        last = await self._records.get(instance_name)
        if last is not None and event.occurred_at and event.occurred_at < last.occurred_at:
            self._memory[instance_name] = (now, last)
            return last
        merged = merge(last, instance_name, event, now=now)
        if not await self._records.save(merged):
            merged = await self._records.get(instance_name) or merged
        self._memory[instance_name] = (now, merged)
        return merged

    async def get(self, instance_name: str) -> ConnectionRecord | None:
        now = self._clock()
        cached = self._memory.get(instance_name)
        if cached is not None and now - cached[0] < MEMORY_FRESH_SECONDS:
            return cached[1]
        record = await self._records.get(instance_name)
        self._memory[instance_name] = (now, record)
        return record

    async def status(self, instance_name: str, *, include_qr_code: bool) -> ConnectionStatus | None:
        """The recorded status, or None when the gateway must be asked: nothing recorded, or a QR is wanted while
        not connected and no fresh one is recorded."""
        record = await self.get(instance_name)
        if record is None:
            return None
        if not include_qr_code:
            return dataclasses.replace(record.status(), qr_code="", pairing_code="")
        if record.state is ConnectionState.CONNECTED:
            return record.status()
        if record.qr_code and self._clock() - record.qr_at < QR_FRESH_SECONDS:
            return record.status()
        return None

    async def forget(self, instance_name: str) -> int:
        self._memory.pop(instance_name, None)
        return await self._records.delete(instance_name)

    async def counts(self) -> dict[str, int]:
        """How many instances are in each recorded state (no names: it feeds the open /health)."""
        return await self._records.count_by_state()


@dataclass(frozen=True)
class Provisioned:
    """What provisioning did on the gateway."""

    provisioned: bool = False
    created: bool = False
    instance_token: str = ""
    remote_id: str = ""
    qr_code: str = ""
    pairing_code: str = ""


@dataclass(frozen=True)
class ActionResult:
    """The connection after an action, and the gateway's words about it."""

    status: ConnectionStatus
    message: str = ""


@dataclass(frozen=True)
class RemoteInstance:
    """An instance on a gateway server."""

    name: str
    server_url: str
    state: ConnectionState
    raw_state: str = ""
    owner_jid: str = ""
    profile_name: str = ""
    remote_id: str = ""


@dataclass(frozen=True)
class GatewayServer:
    """A gateway server and a key to list it with."""

    url: str
    key: str


class NotConnectedError(ChannelRejectedError):
    """The gateway refused an action because the account is not connected (Evolution's 400 on logout)."""


class GatewayAdmin(Protocol):
    """One channel's instance administration on its gateway (Evolution's /instance/* API). Failures are raised as
    the sender seam's `ChannelRejectedError` (refused) and `ChannelTransientError` (could not ask)."""

    async def provision(self, instance: Instance, webhook_url: str) -> Provisioned:
        """Create the gateway instance with the hub's webhook, or point an existing one at the hub."""
        ...

    async def delete_remote(self, instance: Instance) -> bool:
        """Delete the gateway instance; False when it was already gone."""
        ...

    async def act(self, instance: Instance, action: ConnectionAction, phone_number: str) -> ActionResult:
        """Carry out `action`; raise `NotConnectedError` for a logout of an account that is not connected."""
        ...

    def servers(self, instances: Iterable[Instance]) -> list[GatewayServer]:
        """The distinct servers (with their keys) `instances` use, plus the deployment's default one."""
        ...

    def manages(self, instance: Instance) -> tuple[str, str] | None:
        """(server URL, remote name) of the gateway instance `instance` manages, None when not this channel's."""
        ...

    async def list_remote(self, server: GatewayServer) -> list[RemoteInstance]:
        """Every instance on `server` its key can see."""
        ...


def normalized_url(url: str) -> str:
    """A server URL as compared across instances (no trailing slash, lower-case scheme and host)."""
    scheme, sep, rest = url.strip().rstrip("/").partition("://")
    if not sep:
        return url.strip().rstrip("/")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def _upstream(channel: Channel) -> dict[str, str]:
    return {UPSTREAM_METADATA: channel.value}


class ConnectionDesk:
    """The connection use cases of ChannelsService: provision, delete remotely, act, discover, record, report."""

    def __init__(
        self,
        instances: InstanceDirectory,
        admins: Mapping[Channel, GatewayAdmin],
        book: ConnectionBook | None = None,
    ) -> None:
        self._instances = instances
        self._admins = admins
        self.book = book or ConnectionBook(MemoryConnectionRecords())
        self._known: dict[str, Instance] = {}

    def instances_changed(self, instances: Mapping[str, Instance]) -> None:
        """Keep the instance list discovery compares against (the router's watch stream feeds it)."""
        self._known = dict(instances)

    async def provision(self, instance: Instance, webhook_url: str) -> Provisioned:
        """Set the instance up on its gateway (it may not be stored yet). Refused credentials are INVALID_ARGUMENT
        ACCOUNT_REJECTED, an unreachable gateway UNAVAILABLE; both carry the gateway in their metadata."""
        admin = self._admins.get(instance.channel)
        if admin is None or not webhook_url:
            return Provisioned()
        try:
            done = await admin.provision(instance, webhook_url)
        except ChannelRejectedError as exc:
            raise InvalidArgumentError(
                f"{instance.channel} refused to provision the instance: {exc.message}",
                reason=REASON_ACCOUNT_REJECTED,
                violations=[FieldViolation(f"{instance.channel.value}.credentials", exc.message)],
                metadata=_upstream(instance.channel),
            ) from None
        except ChannelError as exc:
            raise UnavailableError(
                f"{instance.channel} could not be reached to provision the instance: {exc.message}",
                reason=REASON_GATEWAY_UNAVAILABLE,
                metadata=_upstream(instance.channel),
            ) from None
        if done.qr_code or done.pairing_code:
            await self._record_quietly(
                instance.name,
                ConnectionEvent(raw_state="connecting", qr_code=done.qr_code, pairing_code=done.pairing_code),
            )
        return done

    async def delete_remote(self, instance_name: str) -> bool:
        """Delete the instance's gateway instance (False when already gone, or the channel has none)."""
        instance = await self._instance(instance_name)
        admin = self._admins.get(instance.channel)
        if admin is None:
            return False
        try:
            deleted = await admin.delete_remote(instance)
        except ChannelRejectedError as exc:
            raise InvalidArgumentError(
                f"{instance.channel} refused to delete the instance: {exc.message}",
                reason=REASON_ACCOUNT_REJECTED,
                metadata=_upstream(instance.channel),
            ) from None
        except ChannelError as exc:
            raise UnavailableError(
                f"{instance.channel} could not be reached to delete the instance: {exc.message}",
                reason=REASON_GATEWAY_UNAVAILABLE,
                metadata=_upstream(instance.channel),
            ) from None
        await self.book.forget(instance_name)
        return deleted

    async def act(self, instance_name: str, action: ConnectionAction, phone_number: str = "") -> ActionResult:
        """Connect, restart, log out or disconnect, record the state it leaves, and return it."""
        if phone_number and action is not ConnectionAction.CONNECT:
            raise InvalidArgumentError(
                "a phone number is only taken by connect",
                violations=[FieldViolation("phone_number", "only for connect (a pairing code)")],
            )
        digits = "".join(ch for ch in phone_number if ch.isdigit())
        if phone_number and not 8 <= len(digits) <= 15:
            raise InvalidArgumentError(
                "invalid phone number",
                violations=[FieldViolation("phone_number", "an international number, 8 to 15 digits")],
            )
        instance = await self._instance(instance_name)
        admin = self._admins.get(instance.channel)
        if admin is None:
            raise FailedPreconditionError(
                f"a {instance.channel} instance has no {action} action", reason=REASON_NO_SUCH_ACTION
            )
        try:
            result = await admin.act(instance, action, digits)
        except NotConnectedError as exc:
            if action is not ConnectionAction.DISCONNECT:
                raise FailedPreconditionError(exc.message, reason=REASON_NOT_CONNECTED) from None
            result = ActionResult(
                ConnectionStatus(state=ConnectionState.DISCONNECTED, raw_state="close"), message=exc.message
            )
        except ChannelRejectedError as exc:
            raise FailedPreconditionError(
                f"{instance.channel} refused to {action}: {exc.message}",
                reason=REASON_GATEWAY_REFUSED,
                metadata=_upstream(instance.channel),
            ) from None
        except ChannelError as exc:
            raise UnavailableError(
                f"{instance.channel} could not be reached to {action}: {exc.message}",
                reason=REASON_GATEWAY_UNAVAILABLE,
                metadata=_upstream(instance.channel),
            ) from None
        status = result.status
        if action is ConnectionAction.LOGOUT:
            # A logout ends the account's session: nothing recorded about it (QR, account) is true any more.
            await self.book.forget(instance_name)
        event = ConnectionEvent(
            state=status.state,
            raw_state=status.raw_state,
            qr_code=status.qr_code,
            pairing_code=status.pairing_code,
            detail=status.detail,
            account_id=status.account_id,
            account_name=status.account_name,
        )
        await self._record_quietly(instance_name, event)
        return result

    async def discover(self, server_url: str = "", key: str = "") -> list[RemoteInstance]:
        """Gateway instances no hub instance manages, ordered by server then name. With `server_url`, that server
        only (its refusal is an error); otherwise every server the instances use plus the default one (a server
        that cannot be listed is skipped and logged: one tenant's server must not hide the others)."""
        known = list(self._known.values())
        managed: set[tuple[str, str]] = set()
        for instance in known:
            admin = self._admins.get(instance.channel)
            place = admin.manages(instance) if admin is not None else None
            if place is not None:
                managed.add((normalized_url(place[0]), place[1]))
        found: dict[tuple[str, str], RemoteInstance] = {}
        for channel, admin in self._admins.items():
            if server_url:
                servers = [GatewayServer(server_url, key)]
            else:
                servers = admin.servers(i for i in known if i.channel == channel)
            for server in servers:
                try:
                    remote = await admin.list_remote(server)
                except ChannelRejectedError as exc:
                    if server_url:
                        raise InvalidArgumentError(
                            f"{channel} refused to list its instances: {exc.message}",
                            reason=REASON_ACCOUNT_REJECTED,
                            violations=[FieldViolation("evolution_key", exc.message)],
                            metadata=_upstream(channel),
                        ) from None
                    log.warning("cannot list the instances of %s: %s", server.url, exc.message)
                    continue
                except ChannelError as exc:
                    if server_url:
                        raise UnavailableError(
                            f"{channel} could not be reached to list its instances: {exc.message}",
                            reason=REASON_GATEWAY_UNAVAILABLE,
                            metadata=_upstream(channel),
                        ) from None
                    log.warning("cannot list the instances of %s: %s", server.url, exc.message)
                    continue
                for item in remote:
                    place = (normalized_url(item.server_url), item.name)
                    if place not in managed:
                        found.setdefault(place, item)
        return [found[place] for place in sorted(found)]

    async def record(self, instance_name: str, event: ConnectionEvent) -> ConnectionRecord:
        """Keep what the channel said (ingress relays Evolution's connection.update and qrcode.updated)."""
        if not instance_name:
            raise InvalidArgumentError(
                "instance_name is required", violations=[FieldViolation("instance_name", "required")]
            )
        return await self.book.record(instance_name, event)

    async def _record_quietly(self, instance_name: str, event: ConnectionEvent) -> None:
        """Record a state an action produced; the action happened, so a storage hiccup must not fail it."""
        try:
            await self.book.record(instance_name, event)
        except Exception:
            log.exception("could not record the connection state of %s", instance_name)

    async def _instance(self, name: str) -> Instance:
        if not name:
            raise InvalidArgumentError(
                "instance_name is required", violations=[FieldViolation("instance_name", "required")]
            )
        return await self._instances.get(name)
