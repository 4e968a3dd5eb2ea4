"""A finding about an input file, the one shape every checker reports in.

It lives with the language because lint is its first producer and the language imports nothing
above it; plugin loading, config checks and routing test cases report the same shape, so the
command line prints all of them one way.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Diagnostic:
    """One finding about an input file, printed as ``path:line:col: severity[CODE]: message``."""

    path: str
    line: int
    col: int
    severity: str  # "error" | "warning"
    code: str
    message: str
    hint: str = ""
    source_line: str = ""
    # where the offending text ends (exclusive column); 0: the end of the token at line:col
    end_line: int = 0
    end_col: int = 0

    def format(self, show_source: bool = True) -> str:
        where = f"{self.path}:{self.line}:{self.col}" if self.line else self.path
        out = [f"{where}: {self.severity}[{self.code}]: {self.message}"]
        if show_source and self.source_line and self.line:
            out.append(f"    {self.source_line.rstrip()}")
            out.append("    " + caret_indent(self.source_line, self.col) + "^")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "endLine": self.span()[2],
            "endCol": self.span()[3],
        }

    def span(self) -> tuple[int, int, int, int]:
        """(line, col, end line, end col): the end as given, else the end of the token at line:col."""
        if self.end_line:
            return self.line, self.col, self.end_line, self.end_col
        return self.line, self.col, self.line, self.col + token_length(self.source_line or "", self.col)


_TOKEN = re.compile(r'"(\\.|[^"\\])*"?|/(\\.|[^/\\])+/[ims]*|[A-Za-z_][\w-]*(:[\w-]+)?|-?\d+(\.\d+)?[a-z]*|[=!<>]=|\S')


def token_length(line: str, col: int) -> int:
    """How long the token starting at ``col`` of ``line`` is (at least 1, so a span is never empty)."""
    found = _TOKEN.match(line, max(col - 1, 0)) if 0 < col <= len(line) else None
    return max(len(found.group()), 1) if found else 1


def caret_indent(source_line: str, col: int) -> str:
    """Blanks up to column ``col``, keeping the line's tabs, so the caret lands under the token
    however wide the terminal draws a tab."""
    return "".join("\t" if char == "\t" else " " for char in source_line[: max(col - 1, 0)])


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A hint naming the closest known name, or nothing when none is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""
