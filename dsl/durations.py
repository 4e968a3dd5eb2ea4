"""Durations as people write them: ``500ms``, ``30s``, ``5m``, ``2h``, ``1d``, ``2w``, or a sum
such as ``1h30m``.

One reading for the whole product, so a duration that works in a rule file (a chain or step
``timeout``) works on the command line (``arbiter dlq purge --older-than``) and means the same.
A duration is one or more parts, each a number and a unit, without spaces; case does not
matter; a bare number is refused because its unit would be a guess. Values are counted in
whole milliseconds. :func:`format_ms` writes the canonical form ``arbiter fmt`` prints: the
largest unit that divides the value evenly (``90m`` stays ``90m``, ``1h30m`` becomes ``90m``,
``120s`` becomes ``2m``).
"""

from __future__ import annotations

import datetime as dt
import re
from fractions import Fraction

UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
EXAMPLES = "500ms, 30s, 5m, 2h, 1d or 1h30m"


class DurationError(ValueError):
    """A text that is not a duration; the message says what to write instead."""


def parse_ms(text: str) -> int:
    """The duration ``text`` in milliseconds; :class:`DurationError` if it is not one."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise DurationError(f"an empty text is not a duration; write one like {EXAMPLES}")
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        raise DurationError(
            f"'{text}' is not a duration: it needs a unit, e.g. {cleaned}s, {cleaned}m, {cleaned}h or {cleaned}d"
        )
    parts = _PART.findall(cleaned)
    if not parts or "".join(number + unit for number, unit in parts) != cleaned:
        raise DurationError(
            f"'{text}' is not a duration like {EXAMPLES} (units: {', '.join(UNITS_MS)}; no spaces or signs)"
        )
    total = sum(Fraction(number) * UNITS_MS[unit] for number, unit in parts)
    if total.denominator != 1:
        raise DurationError(f"'{text}' is not a whole number of milliseconds")
    return int(total)


def parse_timedelta(text: str) -> dt.timedelta:
    """The duration ``text`` as a :class:`datetime.timedelta`; :class:`DurationError` if it is not
    one, or is longer than a timedelta holds (999,999,999 days)."""
    ms = parse_ms(text)
    try:
        return dt.timedelta(milliseconds=ms)
    except OverflowError:
        raise DurationError(f"'{text}' is longer than the longest duration, {dt.timedelta.max.days:,}d") from None


def format_ms(ms: int) -> str:
    """The canonical text of a duration: the largest unit that divides it evenly."""
    for unit, size in sorted(UNITS_MS.items(), key=lambda item: -item[1]):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
