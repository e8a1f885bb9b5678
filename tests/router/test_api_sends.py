"""SendText and SendMedia through the real server: recipients, splitting, errors and their own traces."""

from __future__ import annotations

import json

import grpc
import pytest
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import router_service_pb2

from servicekit.errors import FailedPreconditionError, InvalidArgumentError
from services.router.core.recipients import normalize_recipient
from tests.router.conftest import Harness, whatsapp_instance


async def setup_instance(h: Harness) -> None:
    await h.stub.CreateInstance(router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(h.agent.url)))


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("+5511999999999", "5511999999999"),
        ("5511999999999", "5511999999999"),
        ("+55 (11) 99999-9999", "5511999999999"),
        ("5511999999999@s.whatsapp.net", "5511999999999@s.whatsapp.net"),
        ("120363025555555555@g.us", "120363025555555555@g.us"),
        ("123456789012345@lid", "123456789012345@lid"),
    ],
)
def test_whatsapp_recipients(recipient: str, expected: str) -> None:
    assert normalize_recipient(recipient, "whatsapp") == expected


@pytest.mark.parametrize("recipient", ["", "  ", "hello", "someone@example.com", "@g.us"])
def test_bad_whatsapp_recipients(recipient: str) -> None:
    with pytest.raises(InvalidArgumentError, match="recipient"):
        normalize_recipient(recipient, "whatsapp")


def test_other_channels_keep_native_ids() -> None:
    assert normalize_recipient("C024BE91L", "slack") == "C024BE91L"


async def test_send_text_starts_its_own_trace(harness: Harness) -> None:
    await setup_instance(harness)
    response = await harness.stub.SendText(
        router_service_pb2.SendTextRequest(
            instance_name="acme", recipient="+5511999999999", text="Your order shipped.", session_id="s-1"
        )
    )
    assert list(response.message_ids) == ["wamid-1"]
    [request] = harness.channels.requests
    assert request.chat_id == "5511999999999"
    assert [p.text for p in request.parts] == ["Your order shipped."]
    assert len(request.idempotency_key) == 36  # a fresh uuid4

    [span] = harness.spans("api.send_text")
    assert span.parent is None
    assert format(span.context.trace_id, "032x") == response.trace_id
    attributes = dict(span.attributes or {})
    assert attributes["omni.status"] == "sent"
    assert attributes["omni.source_channel"] == "api"
    assert attributes["omni.instance_name"] == "acme"
    assert attributes["omni.session_id"] == "s-1"
    assert json.loads(str(attributes["omni.payload.outgoing"]))["chat_id"] == "5511999999999"


async def test_send_text_with_key_is_idempotent_and_long_text_is_split(harness: Harness) -> None:
    await setup_instance(harness)
    text = ("a" * 700) + "\n\n" + ("b" * 700)
    request = router_service_pb2.SendTextRequest(
        instance_name="acme", recipient="5511999999999@s.whatsapp.net", text=text, idempotency_key="api-1"
    )
    first = await harness.stub.SendText(request)
    second = await harness.stub.SendText(request)
    assert list(first.message_ids) == list(second.message_ids)
    assert len(first.message_ids) == 2
    assert harness.channels.delivered == ["a" * 700, "b" * 700]
    assert first.trace_id != second.trace_id


async def test_send_text_errors(harness: Harness) -> None:
    await setup_instance(harness)
    for request, code in (
        (router_service_pb2.SendTextRequest(instance_name="acme", recipient="+5511", text=" "), "INVALID_ARGUMENT"),
        (router_service_pb2.SendTextRequest(instance_name="acme", recipient="x@y", text="hi"), "INVALID_ARGUMENT"),
        (router_service_pb2.SendTextRequest(instance_name="nope", recipient="5511999999999", text="hi"), "NOT_FOUND"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await harness.stub.SendText(request)
        assert err.value.code().name == code

    harness.channels.fail_next(FailedPreconditionError("not on WhatsApp", reason="CHANNEL_REJECTED"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.SendText(
            router_service_pb2.SendTextRequest(instance_name="acme", recipient="5511999999999", text="hi")
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    [span] = harness.spans("api.send_text")
    assert (span.attributes or {})["omni.status"] == "error"


async def test_send_media(harness: Harness) -> None:
    await setup_instance(harness)
    media = message_pb2.Media(
        type=channel_pb2.MESSAGE_TYPE_IMAGE,
        mime_type="image/png",
        url="https://files.invalid/cat.png",
        caption="A cat",
    )
    response = await harness.stub.SendMedia(
        router_service_pb2.SendMediaRequest(instance_name="acme", recipient="+5511999999999", media=media)
    )
    assert len(response.message_ids) == 1
    assert len(response.trace_id) == 32
    [request] = harness.channels.requests
    [part] = request.parts
    assert part.text == "A cat"
    assert part.media.url == "https://files.invalid/cat.png"
    assert part.media.type == channel_pb2.MESSAGE_TYPE_IMAGE
    assert harness.spans("api.send_media")[0].attributes["omni.status"] == "sent"  # type: ignore[index]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.SendMedia(
            router_service_pb2.SendMediaRequest(
                instance_name="acme", recipient="+5511999999999", media=message_pb2.Media(caption="nothing")
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
