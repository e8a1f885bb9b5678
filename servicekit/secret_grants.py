"""Which instance secrets each mesh service may receive in clear: those it uses, and no others.

The router holds every secret (encrypted at rest) and is the only place they are all in clear. Ingress verifies
webhooks (the webhook secrets) and runs the channels' bots and signature checks (the channel config secrets);
channels calls the channel APIs (the channel config secrets, plus the webhook secret it registers with the channel
gateway when the router asks it to). The agent's key and signing secret never leave the router, which makes the
agent calls. The gateway, tracing, and any API-key caller get the redacted view: `is_set` and a hint.
"""

from __future__ import annotations

from collections.abc import Mapping

from servicekit.convert import NO_SECRETS, SecretScope
from servicekit.principals import Principal

WEBHOOK_SECRETS = frozenset({"webhook_secret", "previous_webhook_secret"})

SECRET_GRANTS: Mapping[str, SecretScope] = {
    "ingress": SecretScope(WEBHOOK_SECRETS, channel=True),
    "channels": SecretScope(channel=True),
}
"""Mesh service name -> the secrets it receives from GetInstance(WITH_SECRETS) and WatchInstances."""

CHANNEL_CREDENTIALS = SecretScope(channel=True)
"""What the router sends channels to check an account: the channel's own credentials."""
WEBHOOK_REGISTRATION = SecretScope(frozenset({"webhook_secret"}), channel=True)
"""What the router sends channels to register a webhook: the credentials and the secret the webhook must carry."""


def secrets_for(principal: Principal) -> SecretScope:
    """The secrets `principal` may read in clear (none unless it is a mesh service that uses some)."""
    if principal.kind != "mesh":
        return NO_SECRETS
    return SECRET_GRANTS.get(principal.service, NO_SECRETS)
