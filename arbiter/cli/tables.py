"""Text for people: aligned tables, and strings made safe to print on a terminal.

Every listing of the command line goes through :func:`table`, so all of them align, truncate
and escape the same way; :func:`printable` is what keeps text that came from a request or a
worker from steering the terminal (colours, bells, cursor moves, a cleared screen).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Collection, Iterable, Mapping, Sequence

ELLIPSIS = "…"
GAP = "  "
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: what a terminal may act on
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable(text: object, keep: str = "") -> str:
    """``text`` with control characters shown as escapes (``\\x1b``, ``\\n``) instead of obeyed.

    ``keep`` lists the ones the caller's layout wants as they are, e.g. ``"\\n"`` for a block
    of text printed on several lines.
    """

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return char if char in keep else _NAMED.get(char, f"\\x{ord(char):02x}")

    return _CONTROL.sub(escape, str(text))


def printable_fields(data: Any) -> Any:
    """``data`` with every string inside it through :func:`printable`, for a renderer that lays
    out stored fields as they are: each field stays on its line whatever it holds."""
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, Mapping):
        return {key: printable_fields(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [printable_fields(value) for value in data]
    return data


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide East Asian characters take two, marks none."""
    return sum(_char_width(char) for char in text)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` columns, ending in an ellipsis when something was cut."""
    if width(text) <= limit:
        return text
    kept, used = [], 0
    for char in text:
        used += _char_width(char)
        if used > limit - width(ELLIPSIS):
            break
        kept.append(char)
    return "".join(kept) + ELLIPSIS


def _cell(value: object, limit: int | None) -> str:
    text = "-" if value is None else printable(value)
    return text if limit is None else truncate(text, limit)


def _pad(text: str, size: int, right: bool) -> str:
    fill = " " * (size - width(text))
    return fill + text if right else text + fill


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Collection[str] = (),
    limits: Mapping[str, int] | None = None,
    header: bool = True,
    rule: bool = False,
) -> list[str]:
    """The lines of a table, columns two spaces apart, no line ending in a space.

    ``columns`` names the columns (and is the header unless ``header`` is false); ``numeric``
    columns are right-aligned, header included; ``limits`` caps a column's width, cutting longer
    cells with an ellipsis; ``rule`` underlines the header with dashes. A cell is any value:
    None shows as ``-`` and control characters are escaped.
    """
    limits = limits or {}
    caps = [limits.get(name) for name in columns]
    body = [[_cell(value, cap) for value, cap in zip(row, caps)] for row in rows]
    head = [list(columns)] if header else []
    sizes = [max((width(line[i]) for line in head + body), default=0) for i in range(len(columns))]
    right = [name in numeric for name in columns]
    lines = [GAP.join(_pad(text, size, r) for text, size, r in zip(line, sizes, right)) for line in head + body]
    if header and rule:
        lines.insert(1, GAP.join("-" * size for size in sizes))
    return [line.rstrip(" ") for line in lines]
