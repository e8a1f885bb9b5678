"""Which bots run in this replica, and keeping them running.

Each bot runs in exactly one replica: before starting one, the host takes its lease in the database (a conditional
upsert, see `BotLeaseStore.acquire`) and renews it every `renew_seconds` together with the bot's status. A replica
that dies stops renewing; once its lease runs out (`lease_seconds`) another replica takes the bot over, and the
new bot catches up on the chats' history from the cursors the old one saved. A replica restarted under the same
replica id takes its own leases back at once.

The host reconciles what runs with what the instance watch says (created, updated, deleted, paused instances) on
every change and every renewal tick. Slack instances are hosted only when they have an app token (their Socket
Mode connection); without one their events come as webhooks and nothing runs here. A bot its channel refused for
good stays down, in `error`, for `error_retry_seconds` (or until its config changes); one that crashed is restarted
with a growing back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import orjson

from servicekit.channels import Channel
from servicekit.instances import ChannelConfig, Instance, SlackConfig
from servicekit.tasks import cancel_and_wait
from services.ingress.core.bots.discord_bot import Cursors
from services.ingress.core.bots.status import CONNECTING, DISCONNECTED, BotStatus
from services.ingress.core.inbox import BotLeaseRow
from services.ingress.core.ports import BotLeases

log = logging.getLogger(__name__)


class Bot(Protocol):
    """One hosted connection (a `DiscordBot`, a `SlackSocketBot`)."""

    instance: Instance
    cursors: Cursors
    cursors_dirty: bool
    permanent_failure: bool
    ended_at: float | None

    @property
    def running(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> BotStatus: ...


BotFactory = Callable[[Instance, Cursors, Callable[[], None]], Bot]
"""Builds a bot for an instance, with the cursors its last owner saved and a callback the bot calls whenever its
state changes (so the host stores the new status at once rather than at the next renewal)."""


def needs_connection(instance: Instance) -> bool:
    """Whether the instance's channel needs a connection hosted here: a Slack app only in Socket Mode (app token)."""
    if isinstance(instance.config, SlackConfig):
        return bool(instance.config.app_token)
    return True


class BotHost:
    """Starts, renews, restarts and stops the bots this replica owns."""

    def __init__(
        self,
        leases: BotLeases,
        factories: Mapping[Channel, BotFactory],
        *,
        owner: str,
        lease_seconds: float = 15.0,
        renew_seconds: float = 5.0,
        error_retry_seconds: float = 300.0,
        crash_backoff_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        hosted: Callable[[Instance], bool] = needs_connection,
    ) -> None:
        self._leases = leases
        self._hosted = hosted
        self._factories = factories
        self.owner = owner
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._error_retry_seconds = error_retry_seconds
        self._crash_backoff_seconds = crash_backoff_seconds
        self._clock = clock
        self._desired: dict[str, Instance] = {}
        self._known: set[str] | None = None
        self._bots: dict[str, Bot] = {}
        self._crashes: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reconciling = asyncio.Lock()

    @property
    def bots(self) -> Mapping[str, Bot]:
        """The bots running here, by instance name."""
        return self._bots

    def instances_changed(self, instances: Mapping[str, Instance]) -> None:
        """The instance watch's listener: every known instance, after each change."""
        self._known = set(instances)
        self._desired = {
            name: instance
            for name, instance in instances.items()
            if instance.channel in self._factories and instance.is_active and self._hosted(instance)
        }
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="bot-host")

    async def stop(self) -> None:
        """Stop every bot and give its lease up, so another replica can take it at once."""
        await cancel_and_wait(self._task)
        for name in list(self._bots):
            await self._stop_bot(name, DISCONNECTED, "the replica running the bot stopped")

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bot reconciliation failed")
            self._wake.clear()
            # asyncio.wait, not wait_for: on 3.11, cancelling a wait_for whose event fires at that moment can leave
            # the caller stuck (seen here as a host.stop() that never returned).
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([woken], timeout=self._renew_seconds)
            finally:
                woken.cancel()

    async def reconcile(self) -> None:
        """One pass: stop what should not run, renew and report what runs, start what should."""
        async with self._reconciling:
            await self._reconcile()

    async def _reconcile(self) -> None:
        for name, bot in list(self._bots.items()):
            wanted = self._desired.get(name)
            if wanted is None:
                await self._stop_bot(name, DISCONNECTED, "instance inactive or deleted")
            elif _config(wanted) != _config(bot.instance):
                await self._stop_bot(name, DISCONNECTED, "restarting with the new configuration")
            else:
                bot.instance = wanted
        for name, bot in list(self._bots.items()):
            if not await self._renew(name, bot):
                continue
            if not bot.running and self._restart_due(name, bot):
                await self._restart(name, bot)
        for name, instance in self._desired.items():
            if name not in self._bots:
                await self._try_start(instance)
        if self._known is not None:
            await self._leases.forget(list(self._known), self._clock())

    async def _renew(self, name: str, bot: Bot) -> bool:
        status = bot.status()
        report = orjson.dumps(
            {
                "workspaces": [list(w) for w in status.workspaces],
                "latency_ms": status.latency_ms,
                "account_id": status.account_id,
                "account_name": status.account_name,
            }
        ).decode()
        kept = await self._leases.renew(
            name, self.owner, self._clock(), self._lease_seconds, status.state, status.detail, report
        )
        if not kept:
            log.warning("lost the lease of the %s bot; stopping it here", name)
            await bot.stop()
            del self._bots[name]
            return False
        if bot.cursors_dirty:
            bot.cursors_dirty = False
            await self._leases.save_cursors(name, self.owner, orjson.dumps(bot.cursors).decode())
        return True

    def _restart_due(self, name: str, bot: Bot) -> bool:
        ended = bot.ended_at if bot.ended_at is not None else self._clock()
        if bot.permanent_failure:
            wait = self._error_retry_seconds
        else:
            wait = min(self._crash_backoff_seconds * 2 ** self._crashes.get(name, 0), 300.0)
        return self._clock() - ended >= wait

    async def _restart(self, name: str, old: Bot) -> None:
        self._crashes[name] = self._crashes.get(name, 0) + (0 if old.permanent_failure else 1)
        bot = self._factories[old.instance.channel](old.instance, old.cursors, self._wake.set)
        self._bots[name] = bot
        await bot.start()

    async def _try_start(self, instance: Instance) -> None:
        now = self._clock()
        if not await self._leases.acquire(instance.name, instance.channel.value, self.owner, now, self._lease_seconds):
            return
        row = await self._leases.get(instance.name)
        bot = self._factories[instance.channel](instance, _cursors(row), self._wake.set)
        self._bots[instance.name] = bot
        self._crashes.pop(instance.name, None)
        log.info("starting the %s bot of %s here (%s)", instance.channel, instance.name, self.owner)
        await bot.start()

    async def _stop_bot(self, name: str, state: str, detail: str) -> None:
        bot = self._bots.pop(name)
        await bot.stop()
        if bot.cursors_dirty:
            await self._leases.save_cursors(name, self.owner, orjson.dumps(bot.cursors).decode())
        await self._leases.release(name, self.owner, self._clock(), state, detail)


def _config(instance: Instance) -> tuple[str, ChannelConfig]:
    """What a running bot depends on: a change restarts it. The id is part of it, so an instance deleted and
    recreated under the same name gets a new bot (with no cursors of the old one), never the old one's."""
    return instance.id, instance.config


def _cursors(row: BotLeaseRow | None) -> Cursors:
    if row is None:
        return {}
    try:
        decoded = orjson.loads(row.cursors)
    except orjson.JSONDecodeError:
        return {}
    return {str(k): v for k, v in decoded.items() if isinstance(v, dict)} if isinstance(decoded, dict) else {}


async def bot_statuses(leases: BotLeases, instance_name: str, now: float) -> list[BotStatus]:
    """Every hosted bot as its owner last reported it (a lease run out reads as connecting: a takeover is due)."""
    statuses: list[BotStatus] = []
    for row in await leases.list(instance_name):
        try:
            report = orjson.loads(row.report)
        except orjson.JSONDecodeError:
            report = {}
        expired = bool(row.owner) and row.lease_until < now
        statuses.append(
            BotStatus(
                instance_name=row.instance_name,
                channel=Channel(row.channel),
                state=CONNECTING if expired else row.state,
                detail="the replica running the bot stopped reporting; another replica takes it over"
                if expired
                else row.detail,
                owner="" if expired else row.owner,
                workspaces=tuple((str(w[0]), str(w[1])) for w in report.get("workspaces", []) if len(w) == 2),
                latency_ms=float(report.get("latency_ms", 0.0) or 0.0),
                account_id=str(report.get("account_id", "")),
                account_name=str(report.get("account_name", "")),
                updated_at=row.updated_at,
            )
        )
    return statuses
