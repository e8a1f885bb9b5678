"""The reply splitter: table-driven cases over the contract's rules, plus invariants every split must keep."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.router.core.reply_splitter import size, split_reply

WA = 4096


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    limit: int
    expected: list[str]
    auto_split: bool = True


PARA_A = "a" * 600
PARA_B = "b" * 600
SHORT_PARAS = "First paragraph.\n\nSecond paragraph."

CASES = [
    Case("empty", "", WA, []),
    Case("blank", " \n\n ", WA, []),
    Case("short text is one part", "Hello!", WA, ["Hello!"]),
    Case("short paragraphs stay together", SHORT_PARAS, WA, [SHORT_PARAS]),
    Case(
        "exactly 1000 chars is not split", ("x" * 499) + "\n\n" + ("y" * 499), WA, [("x" * 499) + "\n\n" + ("y" * 499)]
    ),
    Case("1001 chars splits on blank lines", ("x" * 500) + "\n\n" + ("y" * 499), WA, ["x" * 500, "y" * 499]),
    Case("paragraphs become parts", f"{PARA_A}\n\n{PARA_B}", WA, [PARA_A, PARA_B]),
    Case("several blank lines and spaces", f"{PARA_A}\n\n \n\n{PARA_B}\n\n", WA, [PARA_A, PARA_B]),
    Case("auto split off keeps one part", f"{PARA_A}\n\n{PARA_B}", WA, [f"{PARA_A}\n\n{PARA_B}"], auto_split=False),
    Case(
        "blank line inside a fence does not split",
        f"{PARA_A}\n\n```python\nx = 1\n\ny = 2\n```\n\n{PARA_B}",
        WA,
        [PARA_A, "```python\nx = 1\n\ny = 2\n```", PARA_B],
    ),
    Case(
        "long paragraph splits at line boundaries",
        "\n".join(["l" * 30] * 4),
        70,
        ["l" * 30 + "\n" + "l" * 30, "l" * 30 + "\n" + "l" * 30],
        auto_split=False,
    ),
    Case(
        "long line splits at word boundaries",
        " ".join(["word"] * 20),
        24,
        ["word word word word word"] * 4,
        auto_split=False,
    ),
    Case(
        "fence kept whole when it fits",
        "intro line\n```js\nlet a = 1;\nlet b = 2;\n```\noutro",
        40,
        ["intro line", "```js\nlet a = 1;\nlet b = 2;\n```\noutro"],
        auto_split=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_split_cases(case: Case) -> None:
    assert split_reply(case.text, limit=case.limit, auto_split=case.auto_split) == case.expected


def _assert_invariants(parts: list[str], limit: int) -> None:
    assert parts
    for part in parts:
        assert size(part) <= limit, part
        assert part.strip()
        assert part.count("```") % 2 == 0, f"unbalanced fence in {part!r}"


def test_too_long_fence_is_closed_and_reopened() -> None:
    code = "\n".join(f"print({i})" for i in range(40))
    text = f"```python\n{code}\n```"
    parts = split_reply(text, limit=100, auto_split=False)
    _assert_invariants(parts, 100)
    assert len(parts) > 1
    for part in parts:
        assert part.startswith("```python\n")
        assert part.endswith("\n```")
    body = "\n".join(p.removeprefix("```python\n").removesuffix("\n```") for p in parts)
    assert body == code


def test_emoji_never_cut() -> None:
    family = "👨\u200d👩\u200d👧\u200d👦"  # one glyph, 11 UTF-16 units
    flag = "🇧🇷"
    thumbs = "👍🏽"
    text = (family + flag + thumbs) * 30
    parts = split_reply(text, limit=50, auto_split=False)
    _assert_invariants(parts, 50)
    assert "".join(parts) == text
    glyphs = (family, flag, thumbs)
    for part in parts:
        rest = part
        while rest:
            glyph = next(g for g in glyphs if rest.startswith(g))
            rest = rest[len(glyph) :]


def test_astral_characters_count_double() -> None:
    text = "😀" * 30
    parts = split_reply(text, limit=20, auto_split=False)
    assert [len(p) for p in parts] == [10, 10, 10]


@pytest.mark.parametrize(("channel", "limit"), [("whatsapp", 4096), ("discord", 2000), ("slack", 40000)])
def test_long_paragraph_over_channel_limit(channel: str, limit: int) -> None:
    sentence = "The quick brown fox jumps over the lazy dog. "
    paragraph = sentence * (limit // len(sentence) * 2)
    text = f"Short intro.\n\n{paragraph}\n\n```sh\necho done\n```"
    parts = split_reply(text, limit=limit)
    _assert_invariants(parts, limit)
    assert parts[0] == "Short intro."
    assert parts[-1] == "```sh\necho done\n```"
    assert " ".join(parts[1:-1]) == paragraph.strip()


def test_mixed_long_text_invariants() -> None:
    lines = []
    for i in range(200):
        lines.append(f"Line {i} " + "lorem ipsum " * (i % 13))
        if i % 17 == 0:
            lines.append("```\n" + "\n".join(f"code {j}" for j in range(i % 9 + 1)) + "\n```")
        if i % 5 == 0:
            lines.append("")
    text = "\n".join(lines)
    parts = split_reply(text, limit=300)
    _assert_invariants(parts, 300)
