"""Access rule precedence against a reference model (hypothesis), identities per channel, and pattern validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servicekit.channels import Channel
from servicekit.errors import InvalidArgumentError
from servicekit.messages import InboundMessage, Sender
from services.router.core.access import (
    RULE_ALLOW,
    RULE_BLOCK,
    SCOPE_CHAT,
    SCOPE_SENDER,
    AccessPolicy,
    Rule,
    chat_identities,
    normalize_pattern,
    sender_identities,
)

# --- the reference model: the rules of the issue, written as plainly as possible -----------------------------------


def reference(
    rules: list[Rule], instance: str, mode: str, senders: list[str], chats: list[str]
) -> tuple[bool, Rule | None]:
    """(allowed, deciding rule) by brute force: score every rule that applies, keep the best, block wins a tie."""

    def applies(rule: Rule) -> bool:
        if rule.instance_name not in ("", instance):
            return False
        values = senders if rule.scope == SCOPE_SENDER else chats
        if rule.pattern.endswith("*"):
            return any(v.startswith(rule.pattern[:-1]) for v in values)
        return rule.pattern in values

    def score(rule: Rule) -> tuple[int, int, int]:
        exact = not rule.pattern.endswith("*")
        return (1 if exact else 0, 0 if exact else len(rule.pattern) - 1, 1 if rule.instance_name else 0)

    matching = [r for r in rules if applies(r)]
    if not matching:
        return (mode != "allowlist", None)
    best = max(score(r) for r in matching)
    top = [r for r in matching if score(r) == best]
    blocks = [r for r in top if r.rule_type == RULE_BLOCK]
    return (False, blocks[0]) if blocks else (True, top[0])


IDS = st.sampled_from(["+5511", "+55119", "+551199", "+5511999990001", "+5521", "+1", "123@lid", "C01", "C0"])
RULES = st.builds(
    lambda i, stem, star, kind, inst, scope: Rule(
        id=f"r{i}",
        instance_name=inst,
        pattern=stem + ("*" if star else ""),
        rule_type=kind,
        scope=scope,
    ),
    st.integers(0, 10_000),
    IDS,
    st.booleans(),
    st.sampled_from([RULE_ALLOW, RULE_BLOCK]),
    st.sampled_from(["", "acme", "other"]),
    st.sampled_from([SCOPE_SENDER, SCOPE_SENDER, SCOPE_CHAT]),
)


@settings(max_examples=400, deadline=None)
@given(
    rules=st.lists(RULES, max_size=12),
    senders=st.lists(IDS, min_size=1, max_size=3),
    chats=st.lists(IDS, max_size=2),
    mode=st.sampled_from(["open", "allowlist"]),
)
def test_the_policy_decides_as_the_reference_model(
    rules: list[Rule], senders: list[str], chats: list[str], mode: str
) -> None:
    decision = AccessPolicy(rules).decide("acme", mode, senders, chats)
    allowed, rule = reference(rules, "acme", mode, senders, chats)
    assert decision.allowed is allowed
    assert (decision.rule is None) is (rule is None)
    if rule is not None and decision.rule is not None:
        assert decision.rule.rank == rule.rank
        assert decision.rule.rule_type == rule.rule_type


def _rule(rule_id: str, pattern: str, kind: str, instance: str = "", scope: str = SCOPE_SENDER) -> Rule:
    return Rule(rule_id, instance, pattern, kind, scope)


def test_an_exact_id_beats_any_prefix_and_a_longer_prefix_beats_a_shorter() -> None:
    policy = AccessPolicy(
        [
            _rule("short", "+55*", RULE_BLOCK),
            _rule("long", "+5511*", RULE_ALLOW),
            _rule("exact", "+5511999990001", RULE_BLOCK, "acme"),
        ]
    )
    assert policy.decide("acme", "open", ["+5511888880001"]).rule == policy.rules[1]
    assert policy.decide("acme", "open", ["+5521888880001"]).allowed is False
    decision = policy.decide("acme", "open", ["+5511999990001"])
    assert (decision.allowed, decision.rule) == (False, policy.rules[2])
    assert "exact" in decision.reason
    assert "+5511999990001" in decision.reason


def test_an_instance_rule_beats_a_global_one_and_block_wins_a_tie() -> None:
    policy = AccessPolicy([_rule("g", "+5511*", RULE_BLOCK), _rule("i", "+5511*", RULE_ALLOW, "acme")])
    assert policy.decide("acme", "open", ["+5511999990001"]).allowed is True
    assert policy.decide("other", "open", ["+5511999990001"]).allowed is False
    tie = AccessPolicy([_rule("a", "+5511*", RULE_ALLOW, "acme"), _rule("b", "+5511*", RULE_BLOCK, "acme")])
    assert tie.decide("acme", "open", ["+5511999990001"]).rule == tie.rules[1]


def test_allowlist_mode_lets_only_allowed_senders_through() -> None:
    policy = AccessPolicy([_rule("a", "+5511*", RULE_ALLOW, "acme")])
    assert policy.decide("acme", "allowlist", ["+5511999990001"]).allowed is True
    refused = policy.decide("acme", "allowlist", ["+5521999990001"])
    assert (refused.allowed, refused.rule) == (False, None)
    assert "allowlist" in refused.reason
    assert policy.decide("acme", "open", ["+5521999990001"]).allowed is True


def test_every_whatsapp_identity_of_the_sender_is_matched() -> None:
    message = InboundMessage(
        channel_message_id="m",
        chat_id="120363000000000001@g.us",
        sender=Sender(id="5511999990001:12@s.whatsapp.net", alt_id="8888@lid", phone_number="5511999990001"),
        is_group=True,
    )
    assert set(sender_identities(message)) == {"5511999990001@s.whatsapp.net", "+5511999990001", "8888@lid"}
    assert chat_identities(message) == ("120363000000000001@g.us",)
    for pattern in ("+5511999990001", "8888@lid", "5511999990001@s.whatsapp.net", "+55119*"):
        assert AccessPolicy([_rule("x", pattern, RULE_BLOCK)]).evaluate("acme", "open", message).allowed is False
    group = AccessPolicy([_rule("g", "120363000000000001@g.us", RULE_BLOCK, "acme", SCOPE_CHAT)])
    assert group.evaluate("acme", "open", message).allowed is False


def test_a_discord_guild_rule_matches_every_channel_of_the_guild() -> None:
    message = InboundMessage(
        channel_message_id="m",
        chat_id="222222222222222222",
        sender=Sender(id="111111111111111111"),
        channel=Channel.DISCORD,
        context={"guild_id": "333333333333333333"},
    )
    policy = AccessPolicy([_rule("g", "333333333333333333", RULE_ALLOW, "bot", SCOPE_CHAT)])
    assert policy.evaluate("bot", "allowlist", message).allowed is True


@pytest.mark.parametrize(
    ("raw", "scope", "channel", "phone", "stored"),
    [
        ("+55 (11) 99999-0001", SCOPE_SENDER, Channel.WHATSAPP, True, "+5511999990001"),
        ("5511999990001", SCOPE_SENDER, Channel.WHATSAPP, False, "+5511999990001"),
        ("+5511*", SCOPE_SENDER, None, True, "+5511*"),
        ("5511999990001:3@S.WHATSAPP.NET", SCOPE_SENDER, Channel.WHATSAPP, False, "5511999990001@s.whatsapp.net"),
        ("123456@lid", SCOPE_SENDER, Channel.WHATSAPP, False, "123456@lid"),
        ("120363000000000001@g.us", SCOPE_CHAT, Channel.WHATSAPP, False, "120363000000000001@g.us"),
        ("111111111111111111", SCOPE_SENDER, Channel.DISCORD, False, "111111111111111111"),
        ("111111111111111111", SCOPE_SENDER, None, False, "111111111111111111"),
        ("u0123abc", SCOPE_SENDER, Channel.SLACK, False, "U0123ABC"),
        ("C0123ABC", SCOPE_CHAT, Channel.SLACK, False, "C0123ABC"),
        ("U01*", SCOPE_SENDER, None, False, "U01*"),
        ("*", SCOPE_SENDER, Channel.WHATSAPP, False, "*"),
    ],
)
def test_patterns_are_normalized_per_channel(
    raw: str, scope: str, channel: Channel | None, phone: bool, stored: str
) -> None:
    assert normalize_pattern(raw, scope=scope, channel=channel, phone=phone, field="f") == stored


@pytest.mark.parametrize(
    ("raw", "scope", "channel", "phone"),
    [
        ("", SCOPE_SENDER, None, False),
        ("+55*11", SCOPE_SENDER, None, True),
        ("+12", SCOPE_SENDER, Channel.WHATSAPP, True),
        ("abc", SCOPE_SENDER, Channel.WHATSAPP, False),
        ("12345", SCOPE_SENDER, Channel.DISCORD, False),
        ("C0123ABC", SCOPE_SENDER, Channel.SLACK, False),
        ("U0123ABC", SCOPE_CHAT, Channel.SLACK, False),
        ("+5511999990001", SCOPE_SENDER, Channel.DISCORD, True),
        ("hello world", SCOPE_SENDER, None, False),
    ],
)
def test_ids_no_channel_uses_are_refused_with_a_reason(
    raw: str, scope: str, channel: Channel | None, phone: bool
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        normalize_pattern(raw, scope=scope, channel=channel, phone=phone, field="sender_id")
    assert caught.value.violations[0].field == "sender_id"
