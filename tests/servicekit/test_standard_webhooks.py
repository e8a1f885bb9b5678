"""Standard Webhooks signing and verification, and the echo agent as a verifier over real HTTP.

The six cases every verifier must pass (valid; several signatures with one valid; tampered body; wrong secret;
stale timestamp; missing headers) run once against `verify` directly and once against the echo agent, a real
aiohttp server, so the reference verifier shipped to agent authors is proven, not just the library.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from examples.agent_echo import EchoAgent
from servicekit import standard_webhooks as sw

ROOT = Path(__file__).resolve().parents[2]
SECRET = sw.new_signing_secret()
OTHER_SECRET = sw.new_signing_secret()
BODY = orjson.dumps({"user_id": "u-1", "session_id": "s-1", "message": "Hello!", "context": {"instance": "acme"}})

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""The worked example of the Standard Webhooks reference libraries: proves interoperability, not self-agreement."""


def case_headers(case: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of one of the six cases."""
    now = time.time()
    if case == "valid":
        return sw.headers_for(SECRET, BODY), BODY
    if case == "several_signatures_one_valid":
        headers = sw.headers_for(SECRET, BODY)
        wrong = sw.sign(OTHER_SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), BODY)
        headers["webhook-signature"] = f"{wrong} v1,bm90LWEtc2lnbmF0dXJl {headers['webhook-signature']}"
        return headers, BODY
    if case == "tampered_body":
        return sw.headers_for(SECRET, BODY), BODY.replace(b"Hello!", b"Hello?")
    if case == "wrong_secret":
        return sw.headers_for(OTHER_SECRET, BODY), BODY
    if case == "stale_timestamp":
        return sw.headers_for(SECRET, BODY, now=now - 301), BODY
    if case == "missing_headers":
        headers = sw.headers_for(SECRET, BODY)
        del headers["webhook-signature"]
        return headers, BODY
    raise AssertionError(case)


CASES = {
    "valid": None,
    "several_signatures_one_valid": None,
    "tampered_body": "no matching signature",
    "wrong_secret": "no matching signature",
    "stale_timestamp": "too old",
    "missing_headers": "missing header(s): webhook-signature",
}


def test_secret_format_and_key() -> None:
    assert SECRET.startswith("whsec_")
    assert len(sw.secret_key(SECRET)) == 32
    assert SECRET != OTHER_SECRET
    assert sw.secret_key(SECRET.removeprefix("whsec_")) == sw.secret_key(SECRET)
    with pytest.raises(ValueError, match="whsec_"):
        sw.secret_key("whsec_not base64!")


def test_matches_the_reference_libraries() -> None:
    signature = sw.sign(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_for_signs_id_timestamp_and_body() -> None:
    headers = sw.headers_for(SECRET, BODY, msg_id="msg_fixed", now=1_700_000_000.9)
    assert headers["webhook-id"] == "msg_fixed"
    assert headers["webhook-timestamp"] == "1700000000"
    version, digest = headers["webhook-signature"].split(",", 1)
    assert version == "v1"
    assert len(base64.b64decode(digest)) == 32
    assert sw.headers_for(SECRET, BODY)["webhook-id"] != sw.headers_for(SECRET, BODY)["webhook-id"]


@pytest.mark.parametrize("case", list(CASES))
def test_verify_six_cases(case: str) -> None:
    headers, body = case_headers(case)
    expected = CASES[case]
    if expected is None:
        sw.verify(SECRET, headers, body)
    else:
        with pytest.raises(sw.WebhookVerificationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            sw.verify(SECRET, headers, body)


def test_verify_window_and_header_names() -> None:
    headers = sw.headers_for(SECRET, BODY, now=1000.0)
    sw.verify(SECRET, headers, BODY, now=1000.0 + 299)
    with pytest.raises(sw.WebhookVerificationError, match="in the future"):
        sw.verify(SECRET, headers, BODY, now=1000.0 - 301)
    with pytest.raises(sw.WebhookVerificationError, match="too old"):
        sw.verify(SECRET, headers, BODY, now=1000.0 + 10, tolerance=5)
    upper = {name.upper(): value for name, value in headers.items()}
    sw.verify(SECRET, upper, BODY, now=1000.0)
    with pytest.raises(sw.WebhookVerificationError, match="not an integer"):
        sw.verify(SECRET, {**headers, "webhook-timestamp": "soon"}, BODY, now=1000.0)
    with pytest.raises(sw.WebhookVerificationError, match="webhook-id, webhook-timestamp, webhook-signature"):
        sw.verify(SECRET, {}, BODY)


@pytest.fixture
async def signed_agent() -> AsyncIterator[EchoAgent]:
    agent = EchoAgent(signing_secret=SECRET)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


@pytest.mark.parametrize("case", list(CASES))
async def test_echo_agent_verifies_six_cases(signed_agent: EchoAgent, case: str) -> None:
    headers, body = case_headers(case)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            signed_agent.url + "/api/agent/chat", data=body, headers={**headers, "Content-Type": "application/json"}
        ) as response,
    ):
        answer = await response.json()
    expected = CASES[case]
    if expected is None:
        assert response.status == 200
        assert answer["text"] == "Echo: Hello!"
        assert signed_agent.rejections == []
    else:
        assert response.status == 401
        assert answer == {"detail": f"invalid signature: {signed_agent.rejections[0]}"}
        assert expected in answer["detail"]
        assert signed_agent.calls == []


async def test_echo_agent_cli_takes_the_secret_from_the_environment() -> None:
    """The runnable reference agent, as a real process, refuses an unsigned call and accepts a signed one."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.agent_echo",
        "--port",
        "0",
        cwd=ROOT,
        env={**os.environ, "AGENT_SIGNING_SECRET": SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        banner = "echo agent listening on "
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert line.startswith(banner)
        url = line.removeprefix(banner) + "/api/agent/chat"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=BODY) as response:
                assert response.status == 401
                assert "missing header(s)" in (await response.json())["detail"]
            async with session.post(url, data=BODY, headers=sw.headers_for(SECRET, BODY)) as response:
                assert response.status == 200
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
