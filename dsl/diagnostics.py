"""A finding about an input file, the one shape every checker reports in.

It lives with the language because lint is its first producer and the language imports nothing
above it; plugin loading, config checks and routing test cases report the same shape, so the
command line prints all of them one way.
"""

from __future__ import annotations

import difflib
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

    def format(self, show_source: bool = True) -> str:
        where = f"{self.path}:{self.line}:{self.col}" if self.line else self.path
        out = [f"{where}: {self.severity}[{self.code}]: {self.message}"]
        if show_source and self.source_line and self.line:
            out.append(f"    {self.source_line.rstrip()}")
            out.append("    " + " " * max(self.col - 1, 0) + "^")
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
        }


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A hint naming the closest known name, or nothing when none is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""
