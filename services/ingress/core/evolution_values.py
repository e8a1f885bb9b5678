"""Evolution's loosely typed values read defensively: int64 fields arrive as numbers, decimal strings or protobuf
`{low, high}` objects depending on the version (its contract §2.2), and any field may be missing or of another type
in a payload from an older or newer server."""

from __future__ import annotations

from typing import Any


def to_int(value: object) -> int | None:
    """An int64 in any of Evolution's encodings: number, decimal string or {low, high} (§2.2)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                return int(float(value))
            except ValueError:
                return None
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high", 0)
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return high * 2**32 + (low % 2**32)
    return None


def str_of(value: object) -> str:
    """`value` when it is a string, else "" (a null, a number or an object where a string was expected)."""
    return value if isinstance(value, str) else ""


def dict_of(value: object) -> dict[str, Any]:
    """`value` when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}
