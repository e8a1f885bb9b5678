"""A local Slack (Web API, signed Events API delivery, Socket Mode) for tests, demos and benchmarks.

Unmodified slack_sdk clients talk to it once pointed at it:

    AsyncWebClient(token=bot.token, base_url=sim.api_url)
    SocketModeClient(app_token=bot.app_token, web_client=AsyncWebClient(base_url=sim.api_url))

Tests stage workspaces, apps (bot token, signing secret, app token, Request URL), users and channels, post users'
messages (delivered as real `event_callback` envelopes, signed POSTs with Slack's retries or Socket Mode envelopes
that must be acked), and read back what apps posted (`posts`). Faults are injectable: 429 with `Retry-After`,
`ok: false` errors, latency, unanswered events (retries with `X-Slack-Retry-Num`), bad signatures, Socket Mode
`disconnect`s.

Run it out of process with `python -m simulators.slack --port 8091`; the `/__sim/*` control endpoints (no auth)
then give the Python API's main powers to other processes.

Deliberate simplifications: no scopes or rate-limit tiers (only injected 429s), no Enterprise Grid, no blocks
validation, no reactions, interactivity or slash commands; `conversations.replies` pages over parent + replies.
"""

from simulators.slack.server import SlackSimulator
from simulators.slack.state import Attempt, Bot, Channel, Delivery, Post, Team, User

__all__ = ["Attempt", "Bot", "Channel", "Delivery", "Post", "SlackSimulator", "Team", "User"]
