"""The Slack part of `make bench`: Events API deliveries through the mesh, with Slack's 3-second ack budget.

The Slack simulator runs in this process (its CPU counts as the bench's own). Each workspace is one hub instance
whose app's Request URL is the instance's webhook URL; a user's DM is stored by the simulator and POSTed to the hub
signed with the app's signing secret, exactly as Slack does, and the simulator also echoes every reply the app posts
back to the hub as a `message` event with `bot_id` (which the hub must ignore), so each answered message costs the hub
two signed webhooks. Ack latency is what the simulator measured for each POST; end to end is the user's post until
the reply appeared in the user's thread. Every message must be answered exactly once, in its own thread.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from bench.stats import percentile
from launcher.local_mesh import LocalMesh
from simulators.slack import SlackSimulator

ACK_BUDGET_MS = 3000.0
"""Slack retries a delivery not acknowledged within 3 s (and disables apps that miss too often)."""


@dataclass
class SlackRun:
    ack_ms: list[float] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    non_2xx: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0


async def run_slack(
    mesh: LocalMesh, slack: SlackSimulator, agent_url: str, agent_key: str, *, messages: int, workspaces: int,
    concurrency: int, timeout: float,
) -> bool:  # fmt: skip
    """Create the workspaces, post `messages` DMs at most `concurrency` at a time, report; False on a lost or
    doubled reply or an ack outside Slack's budget."""
    apps = []
    for index in range(workspaces):
        team = slack.add_team(name=f"bench-{index}")
        bot = slack.add_bot(team.id, f"bench-app-{index}")
        instance = await mesh.create_instance(
            name=f"bench-slack-{index}", channel_type="slack", slack_bot_token=bot.token,
            slack_signing_secret=bot.signing_secret, agent_api_url=agent_url, agent_api_key=agent_key,
            default_agent="echo",
        )  # fmt: skip
        slack.set_request_url(bot, instance["webhook_url"])
        users = [slack.add_user(team.id, f"user-{index}-{n}") for n in range(10)]
        apps.append((bot, [slack.open_dm(bot, user.id) for user in users], users))

    run = SlackRun()
    posted: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        _, dms, users = apps[i % len(apps)]
        dm, user = dms[i // len(apps) % len(dms)], users[i // len(apps) % len(users)]
        async with gate:
            started = time.perf_counter()
            message, deliveries = await slack.post_user_message(dm.id, user.id, f"m{i}-{uuid.uuid4().hex[:6]}")
            posted[message["ts"]] = started
            for delivery in deliveries:
                for attempt in delivery.attempts:
                    run.ack_ms.append(attempt.elapsed * 1000)
                    run.non_2xx += not (200 <= (attempt.status or 0) < 300)

    begin = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(messages)))
    deadline = time.monotonic() + timeout
    answered: dict[str, int] = {}
    first_seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        for post in slack.posts:
            if post.thread_ts in posted and post.ts not in first_seen:
                first_seen[post.ts] = time.perf_counter()
                answered[post.thread_ts] = answered.get(post.thread_ts, 0) + 1
                run.end_to_end_ms.append((first_seen[post.ts] - posted[post.thread_ts]) * 1000)
        if len(answered) >= messages:
            break
        await asyncio.sleep(0.05)
    run.seconds = time.perf_counter() - begin
    await asyncio.sleep(1.0)  # a late duplicate would show now
    answered = {}
    for post in slack.posts:
        if post.thread_ts in posted:
            answered[post.thread_ts] = answered.get(post.thread_ts, 0) + 1
    run.lost = messages - len(answered)
    run.duplicated = sum(count - 1 for count in answered.values() if count > 1)
    report(run, messages, workspaces, concurrency)
    return run.lost == 0 and run.duplicated == 0 and percentile(run.ack_ms, 99) < ACK_BUDGET_MS


def report(run: SlackRun, messages: int, workspaces: int, concurrency: int) -> None:
    print(f"\n== Slack: {messages} DMs over {workspaces} workspaces, Events API, at most {concurrency} in flight")
    print("  (each reply is echoed back as a bot event the hub must ignore: two signed webhooks per message)")
    print(f"  webhook ack      p50 {percentile(run.ack_ms, 50):7.1f} ms   p99 {percentile(run.ack_ms, 99):7.1f} ms   "
          f"max {max(run.ack_ms, default=0):7.1f} ms   non-2xx {run.non_2xx}")  # fmt: skip
    print(f"  end to end       p50 {percentile(run.end_to_end_ms, 50):7.1f} ms   "
          f"p99 {percentile(run.end_to_end_ms, 99):7.1f} ms   {messages / run.seconds:6.1f} replies/s   "
          f"lost {run.lost}   duplicated {run.duplicated}")  # fmt: skip
    met = percentile(run.ack_ms, 99) < ACK_BUDGET_MS
    print(f"  [{'met' if met else 'MISSED'}] ack p99 inside Slack's 3 s budget: {percentile(run.ack_ms, 99):.1f} ms")
