"""The Evolution simulator's REST surface, through real HTTP, against the shared contract fixtures."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulators.evolution import EvolutionSimulator
from tests.simulators.conftest import GLOBAL_KEY, INSTANCE, TOKEN, load_rest, shape

MARIA = "5521991234567"
MARIA_JID = f"{MARIA}@s.whatsapp.net"


async def call(
    session: aiohttp.ClientSession,
    sim: EvolutionSimulator,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    key: str | None = TOKEN,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = {"apikey": key} if key is not None else {}
    async with session.request(method, sim.url + path, json=body, headers=headers) as response:
        return response.status, await response.json(), response


async def send_text(
    session: aiohttp.ClientSession, sim: EvolutionSimulator, text: str = "oi", number: str = MARIA
) -> tuple[int, Any]:
    status, body, _ = await call(
        session, sim, "POST", f"/message/sendText/{INSTANCE}", {"number": number, "text": text}
    )
    return status, body


async def test_unknown_instance_is_404_before_the_key_is_checked(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    expected = load_rest(evolution_fixtures, "error-404-instance")["response"]
    status, body, _ = await call(session, simulator, "POST", "/message/sendText/nope", {"number": MARIA}, key="bad")
    assert (status, body) == (expected["status"], expected["body"])


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_known_instance_with_a_bad_key_is_401(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path, key: str | None
) -> None:
    expected = load_rest(evolution_fixtures, "error-401")["response"]
    status, body, _ = await call(
        session, simulator, "POST", f"/message/sendText/{INSTANCE}", {"number": MARIA, "text": "oi"}, key=key
    )
    assert (status, body) == (expected["status"], expected["body"])
    assert simulator.sent == []


async def test_instance_token_only_opens_its_own_instance(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession
) -> None:
    other_token = simulator.add_instance("other")
    path = f"/instance/connectionState/{INSTANCE}"
    assert (await call(session, simulator, "GET", path, key=other_token))[0] == 401
    assert (await call(session, simulator, "GET", path, key=GLOBAL_KEY))[0] == 200
    status, body, _ = await call(session, simulator, "GET", path, key=TOKEN)
    assert (status, body) == (200, {"instance": {"instanceName": INSTANCE, "state": "open"}})


async def test_send_text_answers_the_fixture_shape_with_a_fresh_id(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    fixture = load_rest(evolution_fixtures, "send-text")
    status, body, _ = await call(session, simulator, "POST", f"/message/sendText/{INSTANCE}", fixture["request"])
    assert status == fixture["response"]["status"] == 201
    assert shape(body) == shape(fixture["response"]["body"])
    assert list(body) == list(fixture["response"]["body"])
    assert re.fullmatch(r"3EB0[0-9A-F]{18}", body["key"]["id"])
    assert body["key"] == {"remoteJid": MARIA_JID, "fromMe": True, "id": body["key"]["id"]}
    assert body["message"] == {"conversation": fixture["request"]["text"]}
    assert (body["status"], body["pushName"], body["source"]) == ("PENDING", "Você", "web")
    assert abs(body["messageTimestamp"] - time.time()) < 5

    [sent] = simulator.sent
    assert (sent.instance, sent.endpoint, sent.number, sent.text) == (
        INSTANCE,
        "sendText",
        MARIA,
        fixture["request"]["text"],
    )
    assert (sent.key_id, sent.remote_jid, sent.body) == (body["key"]["id"], MARIA_JID, fixture["request"])
    _, second = await send_text(session, simulator)
    assert second["key"]["id"] != body["key"]["id"]


@pytest.mark.parametrize(
    ("number", "jid"),
    [
        ("+55 (21) 99123-4567", MARIA_JID),
        ("148203657712934@lid", "148203657712934@lid"),
        ("120363041857263915@g.us", "120363041857263915@g.us"),
        ("120363041857263915", "120363041857263915@g.us"),
    ],
)
async def test_number_becomes_the_remote_jid(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, number: str, jid: str
) -> None:
    status, body = await send_text(session, simulator, number=number)
    assert status == 201
    assert body["key"]["remoteJid"] == jid
    assert ("contextInfo" in body) == (not jid.endswith("@g.us"))


async def test_send_text_validation_errors(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    fixture = load_rest(evolution_fixtures, "error-400-validation")
    status, body, _ = await call(session, simulator, "POST", f"/message/sendText/{INSTANCE}", fixture["request"])
    assert (status, body) == (400, fixture["response"]["body"])
    status, body = await send_text(session, simulator, text="  ")
    assert (status, body["response"]["message"]) == (400, ["Text is required"])
    status, body, _ = await call(session, simulator, "POST", f"/message/sendText/{INSTANCE}", {"text": "oi"})
    assert (status, body["response"]["message"]) == (400, ['instance requires property "number"'])
    assert simulator.sent == []


async def test_unknown_route_is_the_express_404(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    expected = load_rest(evolution_fixtures, "error-404-route")["response"]
    status, body, _ = await call(session, simulator, "POST", f"/message/sendTxt/{INSTANCE}", {})
    assert (status, body) == (expected["status"], expected["body"])
    assert simulator.requests[-1] == ("POST", f"/message/sendTxt/{INSTANCE}")


async def test_fail_next_500_uses_the_contract_body_and_sends_nothing(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    expected = load_rest(evolution_fixtures, "error-500-connection-closed")["response"]["body"]
    simulator.fail_next(2)
    assert await send_text(session, simulator) == (500, expected)
    assert await send_text(session, simulator) == (500, expected)
    assert simulator.sent == []
    assert (await send_text(session, simulator))[0] == 201
    assert len(simulator.sent) == 1


async def test_fail_next_400_and_429_with_retry_after(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    simulator.fail_next(1, status=400)
    simulator.fail_next(1, status=429, retry_after=2)
    simulator.fail_next(1, status=502, body="<html>bad gateway</html>")
    assert await send_text(session, simulator) == (
        400,
        load_rest(evolution_fixtures, "error-400-send-failed")["response"]["body"],
    )
    path = f"/message/sendText/{INSTANCE}"
    status, body, response = await call(session, simulator, "POST", path, {"number": MARIA, "text": "oi"})
    assert (status, body["status"], body["error"]) == (429, 429, "Too Many Requests")
    assert response.headers["Retry-After"] == "2"
    async with session.post(
        simulator.url + path, json={"number": MARIA, "text": "oi"}, headers={"apikey": TOKEN}
    ) as raw:
        assert (raw.status, await raw.text()) == (502, "<html>bad gateway</html>")
        assert "Retry-After" not in raw.headers
    assert simulator.sent == []


async def test_fail_next_after_send_records_the_message_and_find_messages_reconciles_it(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession
) -> None:
    before = datetime.fromtimestamp(time.time() - 1, UTC).isoformat().replace("+00:00", "Z")
    simulator.fail_next(1, status=500, after_send=True, delay=0.3)
    with pytest.raises(TimeoutError):
        async with session.post(
            simulator.url + f"/message/sendText/{INSTANCE}",
            json={"number": MARIA, "text": "lost answer"},
            headers={"apikey": TOKEN},
            timeout=aiohttp.ClientTimeout(total=0.1),
        ) as response:
            await response.read()
    [sent] = await simulator.wait_for_sent(1)
    assert sent.text == "lost answer"

    query = {"where": {"key": {"remoteJid": MARIA_JID, "fromMe": True}, "messageTimestamp": {"gte": before}}}
    status, body, _ = await call(session, simulator, "POST", f"/chat/findMessages/{INSTANCE}", query)
    assert status == 200
    assert (body["messages"]["total"], body["messages"]["pages"], body["messages"]["currentPage"]) == (1, 1, 1)
    [record] = body["messages"]["records"]
    assert record["key"]["id"] == sent.key_id
    assert record["message"] == {"conversation": "lost answer"}
    assert set(record) == {
        "id", "key", "pushName", "messageType", "message", "messageTimestamp", "instanceId", "source", "contextInfo",
        "MessageUpdate",
    }  # fmt: skip


async def test_fail_next_delay_without_after_send_sends_nothing(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession
) -> None:
    simulator.fail_next(1, status=504, delay=0.2)
    with pytest.raises(TimeoutError):
        async with session.post(
            simulator.url + f"/message/sendText/{INSTANCE}",
            json={"number": MARIA, "text": "never"},
            headers={"apikey": TOKEN},
            timeout=aiohttp.ClientTimeout(total=0.05),
        ) as response:
            await response.read()
    await asyncio.sleep(0.25)
    assert simulator.sent == []


async def test_find_messages_filters_pages_and_sorts_newest_first(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession
) -> None:
    for index in range(3):
        await send_text(session, simulator, text=f"m{index}")
    await send_text(session, simulator, text="other chat", number="5531988776655")
    simulator.sent[0].timestamp -= 100  # an older message must sort last
    path = f"/chat/findMessages/{INSTANCE}"

    _, body, _ = await call(session, simulator, "POST", path, {"where": {"key": {"remoteJid": MARIA_JID}}, "offset": 2})
    assert (body["messages"]["total"], body["messages"]["pages"]) == (3, 2)
    assert [r["message"]["conversation"] for r in body["messages"]["records"]] == ["m2", "m1"]
    _, body, _ = await call(
        session, simulator, "POST", path, {"where": {"key": {"remoteJid": MARIA_JID}}, "offset": 2, "page": 2}
    )
    assert [r["message"]["conversation"] for r in body["messages"]["records"]] == ["m0"]

    wanted = simulator.sent[1].key_id
    _, body, _ = await call(session, simulator, "POST", path, {"where": {"key": {"id": wanted}}})
    assert [r["key"]["id"] for r in body["messages"]["records"]] == [wanted]

    future = datetime.fromtimestamp(time.time() + 60, UTC).isoformat()
    _, body, _ = await call(session, simulator, "POST", path, {"where": {"messageTimestamp": {"gte": future}}})
    assert body["messages"] == {"total": 0, "pages": 0, "currentPage": 1, "records": []}


async def test_send_presence_and_mark_read(simulator: EvolutionSimulator, session: aiohttp.ClientSession) -> None:
    path = f"/chat/sendPresence/{INSTANCE}"
    status, body, _ = await call(
        session, simulator, "POST", path, {"number": MARIA, "presence": "composing", "delay": 3000}
    )
    assert (status, body) == (201, {"presence": "composing"})
    assert simulator.presences == [{"instance": INSTANCE, "number": MARIA, "presence": "composing", "delay": 3000}]
    status, body, _ = await call(session, simulator, "POST", path, {"number": MARIA, "presence": "composing"})
    assert (status, body["response"]["message"]) == (400, ['instance requires property "delay"'])

    read = {"readMessages": [{"remoteJid": MARIA_JID, "fromMe": False, "id": "A3F1"}]}
    status, body, _ = await call(session, simulator, "POST", f"/chat/markMessageAsRead/{INSTANCE}", read)
    assert (status, body) == (201, {"message": "Read messages", "read": "success"})
    assert simulator.reads == [{"instance": INSTANCE, **read["readMessages"][0]}]
    assert simulator.sent == []


async def test_send_media_validation_and_document_shape(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    fixture = load_rest(evolution_fixtures, "send-media-document-base64")
    path = f"/message/sendMedia/{INSTANCE}"
    status, body, _ = await call(session, simulator, "POST", path, fixture["request"])
    assert status == 201
    assert shape(body) == shape(fixture["response"]["body"])
    assert body["message"]["documentMessage"]["fileLength"]["low"] == len(base64.b64decode(fixture["request"]["media"]))

    no_name = {key: value for key, value in fixture["request"].items() if key != "fileName"}
    status, body, _ = await call(session, simulator, "POST", path, no_name)
    assert (status, body["response"]["message"]) == (400, ["For base64 the file name must be informed."])
    status, body, _ = await call(session, simulator, "POST", path, {**fixture["request"], "media": "data:x;base64,AAA"})
    assert (status, body["response"]["message"]) == (400, ["Owned media must be a url or base64"])

    audio = {"number": MARIA, "audio": "https://files.example.com/a.mp3"}
    status, body, _ = await call(session, simulator, "POST", f"/message/sendWhatsAppAudio/{INSTANCE}", audio)
    assert (status, body["messageType"], body["message"]["audioMessage"]["ptt"]) == (201, "audioMessage", True)
    assert [s.endpoint for s in simulator.sent] == ["sendMedia", "sendWhatsAppAudio"]


async def test_send_reaction(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    fixture = load_rest(evolution_fixtures, "send-reaction")
    path = f"/message/sendReaction/{INSTANCE}"
    status, body, _ = await call(session, simulator, "POST", path, fixture["request"])
    assert status == 201
    assert shape(body) == shape(fixture["response"]["body"])
    status, body, _ = await call(session, simulator, "POST", path, {**fixture["request"], "reaction": "nice"})
    assert (status, body["response"]["message"]) == (400, ["Reaction must be a single emoji or empty string"])


async def test_instance_lifecycle(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    create = load_rest(evolution_fixtures, "instance-create")
    request = {**create["request"], "instanceName": "fresh"}
    assert (await call(session, simulator, "POST", "/instance/create", request, key=TOKEN))[0] == 401
    status, body, _ = await call(session, simulator, "POST", "/instance/create", request, key=GLOBAL_KEY)
    assert status == 201
    assert shape(body) == shape(create["response"]["body"])
    token = body["hash"]

    name_in_use = load_rest(evolution_fixtures, "error-403-name-in-use")
    status, body, _ = await call(session, simulator, "POST", "/instance/create", name_in_use["request"], key=GLOBAL_KEY)
    assert (status, body) == (403, name_in_use["response"]["body"])

    status, body, _ = await call(session, simulator, "GET", "/instance/connect/fresh", key=token)
    assert status == 200
    assert set(body) == {"pairingCode", "code", "base64", "count"}
    png = base64.b64decode(body["base64"].removeprefix("data:image/png;base64,"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png[12:16] == b"IHDR"
    assert (
        await call(session, simulator, "POST", "/message/sendText/fresh", {"number": MARIA, "text": "x"}, key=token)
    )[0] == 500

    simulator.set_state("fresh", "open")
    status, body, _ = await call(session, simulator, "GET", "/instance/connect/fresh", key=token)
    assert body == {"instance": {"instanceName": "fresh", "state": "open"}}
    status, body, _ = await call(session, simulator, "GET", "/instance/fetchInstances", key=token)
    assert [row["name"] for row in body] == ["fresh"]
    status, body, _ = await call(session, simulator, "GET", "/instance/fetchInstances", key=GLOBAL_KEY)
    assert {row["name"] for row in body} == {INSTANCE, "fresh"}
    status, body, _ = await call(session, simulator, "DELETE", "/instance/logout/fresh", key=token)
    assert (status, body) == (200, load_rest(evolution_fixtures, "instance-logout")["response"]["body"])
    status, body, _ = await call(session, simulator, "DELETE", "/instance/logout/fresh", key=token)
    assert (status, body["response"]["message"]) == (400, ['The "fresh" instance is not connected'])
    status, body, _ = await call(session, simulator, "POST", "/instance/restart/fresh", key=token)
    assert (status, body) == (200, {"instance": {"instanceName": "fresh", "status": "connecting"}})


async def test_not_on_whatsapp_and_closed_instance(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, evolution_fixtures: Path
) -> None:
    expected = load_rest(evolution_fixtures, "error-400-not-on-whatsapp")["response"]["body"]
    simulator.not_on_whatsapp.add("5511900000000")
    assert await send_text(session, simulator, number="5511900000000") == (400, expected)
    simulator.set_state(INSTANCE, "close")
    status, body = await send_text(session, simulator)
    assert (status, body) == (500, load_rest(evolution_fixtures, "error-500-connection-closed")["response"]["body"])


async def test_control_endpoints(simulator: EvolutionSimulator, session: aiohttp.ClientSession) -> None:
    async with session.post(simulator.url + "/__sim/instances", json={"name": "ops", "token": "ops-token"}) as response:
        assert (response.status, await response.json()) == (201, {"name": "ops", "token": "ops-token"})
    async with session.post(
        simulator.url + "/__sim/fail", json={"count": 1, "status": 429, "retry_after": 0.5}
    ) as response:
        assert response.status == 200
    status, _, response = await call(
        session, simulator, "POST", "/message/sendText/ops", {"number": MARIA, "text": "a"}, key="ops-token"
    )
    assert (status, response.headers["Retry-After"]) == (429, "0.5")
    assert (
        await call(session, simulator, "POST", "/message/sendText/ops", {"number": MARIA, "text": "b"}, key="ops-token")
    )[0] == 201
    async with session.get(simulator.url + "/__sim/sent") as response:
        [sent] = await response.json()
    assert (sent["instance"], sent["text"], sent["endpoint"]) == ("ops", "b", "sendText")
    assert ("GET", "/__sim/sent") not in simulator.requests
    async with session.post(simulator.url + "/__sim/reset") as response:
        assert response.status == 200
    assert (simulator.sent, simulator.requests) == ([], [])
