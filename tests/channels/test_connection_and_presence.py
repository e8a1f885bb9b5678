"""Presence and connection status against the Evolution simulator."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from servicekit.errors import InvalidArgumentError, UnavailableError
from servicekit.instances import Instance, WhatsAppConfig
from services.channels.core.models import ConnectionState
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import CHAT, MakeHarness


def with_whatsapp(instance: Instance, name: str, **config: str) -> Instance:
    """`instance` renamed, with some WhatsApp settings changed."""
    return dataclasses.replace(
        instance, name=name, config=dataclasses.replace(instance.config_of(WhatsAppConfig), **config)
    )


async def test_presence_is_sent_with_its_delay(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    await make_harness().core.send_presence("acme", CHAT, "composing", 10)

    assert sim.presences == [{"instance": "acme-support", "number": CHAT, "presence": "composing", "delay": 10}]


async def test_presence_failures_are_unavailable_and_not_retried(
    make_harness: MakeHarness, instance: Instance, requests: list[str]
) -> None:
    harness = make_harness()
    harness.directory.instances["ghost"] = with_whatsapp(instance, "ghost", whatsapp_instance="ghost")

    with pytest.raises(UnavailableError) as caught:
        await harness.core.send_presence("ghost", CHAT, "paused", 0)

    assert "ghost" in caught.value.message
    assert len(requests) == 1


async def test_presence_needs_a_known_presence(make_harness: MakeHarness) -> None:
    with pytest.raises(InvalidArgumentError):
        await make_harness().core.send_presence("acme", CHAT, "", 0)


async def test_an_open_instance_is_connected(make_harness: MakeHarness) -> None:
    status = await make_harness().core.get_connection_status("acme", include_qr_code=True)

    assert status.state is ConnectionState.CONNECTED
    assert status.raw_state == "open"
    assert status.qr_code == ""


@pytest.mark.parametrize("raw_state", ["connecting", "close"])
async def test_a_login_in_progress_returns_the_raw_qr_png(
    make_harness: MakeHarness, sim: EvolutionSimulator, instance: Instance, raw_state: str
) -> None:
    token = sim.add_instance("pending-login", state=raw_state)
    harness = make_harness()
    harness.directory.instances["pending"] = with_whatsapp(
        instance, "pending", whatsapp_instance="pending-login", evolution_key=token
    )

    status = await harness.core.get_connection_status("pending", include_qr_code=True)

    assert status.state is ConnectionState.CONNECTING
    assert not status.qr_code.startswith("data:")
    assert base64.b64decode(status.qr_code).startswith(b"\x89PNG")

    plain = await harness.core.get_connection_status("pending")
    assert plain.raw_state in {"connecting", "close"}
    assert plain.qr_code == ""


async def test_gateway_errors_are_reported_as_state_error(make_harness: MakeHarness, instance: Instance) -> None:
    harness = make_harness()
    harness.directory.instances["ghost"] = with_whatsapp(instance, "ghost", whatsapp_instance="ghost")

    status = await harness.core.get_connection_status("ghost")

    assert status.state is ConnectionState.ERROR
    assert "ghost" in status.detail
