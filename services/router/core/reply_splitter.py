"""Splits an agent reply into the parts sent to a channel.

Long replies read better as several messages, and every channel caps the length of one message. The rules
(public contract, "Reply handling"): with auto-split on and a text longer than 1000 characters, each
blank-line paragraph becomes one part; any part still over the channel's limit is cut at a line boundary, else
at a word boundary, never inside a code fence (a fence longer than the limit is closed at the cut and reopened
with the same info string in the next part) and never inside a character sequence that draws one glyph (emoji
with joiners or modifiers, flags, combining marks). Sizes are counted in UTF-16 code units, which is at least
the number of code points, so a part fits whichever way a channel counts.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

AUTO_SPLIT_THRESHOLD = 1000
"""Texts longer than this are split on blank lines when auto-split is on."""

FENCE = "```"


def size(text: str) -> int:
    """Length in UTF-16 code units (an astral emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def split_reply(text: str, *, limit: int, auto_split: bool = True, threshold: int = AUTO_SPLIT_THRESHOLD) -> list[str]:
    """The parts to send for `text`, in order, each at most `limit` long; [] for a blank text."""
    if limit < 16:
        raise ValueError("limit too small to split sensibly")
    text = text.strip()
    if not text:
        return []
    pieces = _paragraphs(text) if auto_split and len(text) > threshold else [text]
    parts: list[str] = []
    for piece in pieces:
        parts.extend([piece] if size(piece) <= limit else _fit(piece, limit))
    # Trailing spaces and edge newlines carry nothing in a chat message; leading indentation may (code).
    return [p.lstrip("\n").rstrip() for p in parts if p.strip()]


@dataclass
class _Block:
    """A line of text, or a whole code fence (opening line, body, closing line when present)."""

    lines: list[str]
    fence: bool = False
    closed: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _is_fence(line: str) -> bool:
    return line.lstrip().startswith(FENCE)


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    current: _Block | None = None
    for line in text.split("\n"):
        if current is not None:
            current.lines.append(line)
            if _is_fence(line):
                current.closed = True
                current = None
        elif _is_fence(line):
            current = _Block([line], fence=True)
            blocks.append(current)
        else:
            blocks.append(_Block([line]))
    return blocks


def _paragraphs(text: str) -> list[str]:
    """Non-empty blank-line-separated paragraphs; blank lines inside a code fence do not separate."""
    paragraphs: list[str] = []
    current: list[str] = []
    for block in _blocks(text):
        if not block.fence and not block.text.strip():
            if current:
                paragraphs.append("\n".join(current).strip("\n"))
                current = []
            continue
        current.append(block.text)
    if current:
        paragraphs.append("\n".join(current).strip("\n"))
    return [p for p in paragraphs if p.strip()]


def _fit(text: str, limit: int) -> list[str]:
    """Pack lines (and whole fences) greedily into parts of at most `limit`."""
    units: list[str] = []
    for block in _blocks(text):
        body = block.text
        if size(body) <= limit:
            units.append(body)
        elif block.fence:
            units.extend(_split_fence(block, limit))
        else:
            units.extend(_split_words(body, limit))
    parts: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}\n{unit}" if current else unit
        if size(candidate) <= limit:
            current = candidate
            continue
        if current.strip():
            parts.append(current.strip("\n"))
        current = unit
    if current.strip():
        parts.append(current.strip("\n"))
    return parts


def _split_fence(block: _Block, limit: int) -> list[str]:
    """Cut a too-long fence into several fences, each closed and reopened with the same opening line."""
    opening = block.lines[0].strip()
    if size(opening) > limit // 2:
        opening = FENCE
    body = block.lines[1:-1] if block.closed else block.lines[1:]
    capacity = limit - size(opening) - size(FENCE) - 2
    lines: list[str] = []
    for line in body:
        lines.extend([line] if size(line) <= capacity else _split_words(line, capacity))
    pieces: list[str] = []
    group: list[str] = []
    used = 0
    for line in lines:
        cost = size(line) + (1 if group else 0)
        if group and used + cost > capacity:
            pieces.append("\n".join([opening, *group, FENCE]))
            group, used = [], 0
            cost = size(line)
        group.append(line)
        used += cost
    if group or not pieces:
        pieces.append("\n".join([opening, *group, FENCE]))
    return pieces


def _split_words(line: str, limit: int) -> list[str]:
    """Cut one line at spaces; a word longer than `limit` is cut between glyphs."""
    out: list[str] = []
    rest = line
    while size(rest) > limit:
        cut = _longest_prefix(rest, limit)
        space = rest.rfind(" ", 0, cut + 1)
        head = rest[:space].rstrip() if space > 0 else ""
        if head:
            out.append(head)
            rest = rest[space + 1 :].lstrip(" ")
            continue
        cut = _glyph_boundary(rest, cut)
        out.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        out.append(rest)
    return out


def _longest_prefix(text: str, limit: int) -> int:
    """The largest index i with size(text[:i]) <= limit."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def _extends_glyph(char: str) -> bool:
    """True for characters that attach to the one before them (so a cut must not fall just before them)."""
    code = ord(char)
    return (
        char in "\u200d\ufe0e\ufe0f\u20e3"
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
        or unicodedata.category(char) in ("Mn", "Me", "Mc")
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _glyph_boundary(text: str, cut: int) -> int:
    """Move `cut` back so it does not split a glyph; never below 1 so the caller always progresses."""
    original = cut
    while 0 < cut < len(text) and (_extends_glyph(text[cut]) or text[cut - 1] == "\u200d"):
        cut -= 1
    if 0 < cut < len(text) and _is_regional_indicator(text[cut]):
        run = 0
        while cut - run - 1 >= 0 and _is_regional_indicator(text[cut - run - 1]):
            run += 1
        if run % 2 == 1:
            cut -= 1
    return cut if cut > 0 else max(original, 1)
