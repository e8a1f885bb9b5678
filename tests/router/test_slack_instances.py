"""A Slack instance: the token is checked with auth.test (through ChannelsService.CheckAccount) and the bot's own
user id and workspace are stored, so ingress can ignore the bot's own posts; a refused token leaves nothing."""

from __future__ import annotations

import grpc
import pytest
from omni.common.v1 import channel_pb2
from omni.router.v1 import instance_pb2, router_service_pb2

from tests.router.conftest import Harness

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def slack_instance(agent_url: str, token: str = "xoxb-1-2-abc") -> instance_pb2.Instance:
    return instance_pb2.Instance(
        name="workspace",
        channel=channel_pb2.CHANNEL_SLACK,
        slack=instance_pb2.SlackConfig(
            bot_token=instance_pb2.SecretValue(value=token),
            signing_secret=instance_pb2.SecretValue(value=SIGNING_SECRET),
        ),
        agent_api_url=agent_url,
    )


async def test_creation_stores_the_bot_user_and_workspace(harness: Harness) -> None:
    created = await harness.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=slack_instance(harness.agent.url))
    )
    assert (created.instance.slack.bot_user_id, created.instance.slack.team_id, created.instance.slack.team_name) == (
        "U0BOT1",
        "T0ACME",
        "Acme",
    )
    assert created.instance.slack.bot_token.value == ""
    assert created.instance.slack.signing_secret.is_set
    # Slack needs no registration: the operator pastes the Request URL into the Slack app.
    assert harness.channels.webhooks[-1].webhook_url.endswith("/api/v1/webhook/slack/workspace")


async def test_a_refused_token_is_invalid_argument_and_leaves_nothing(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await harness.stub.CreateInstance(
            router_service_pb2.CreateInstanceRequest(instance=slack_instance(harness.agent.url, "xoxb-bad-token"))
        )
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid_auth" in (failure.value.details() or "")
    listed = await harness.stub.ListInstances(router_service_pb2.ListInstancesRequest())
    assert listed.total_count == 0
