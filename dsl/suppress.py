"""Inline suppressions (``# arbiter: ignore[W201]``) and per-code severities, applied to findings.

A suppression is a comment. Written after code, it covers the findings of its own line; alone on
its line, it covers the next line that holds code (so several can be stacked above a rule). A
bare ``# arbiter: ignore`` covers every code. A suppression that covers nothing is a finding
itself (W501), as is one naming a code lint does not have (W502): a stale suppression would
otherwise hide the next real problem on that line without anyone noticing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

from . import ast, lint
from .diagnostics import Diagnostic

UNUSED = "W501"
UNKNOWN = "W502"
OWN_CODES = {
    UNUSED: "suppression that suppresses nothing",
    UNKNOWN: "suppression naming an unknown code",
}
_DIRECTIVE = re.compile(r"#\s*arbiter:\s*ignore(?:\[([^\]]*)\])?", re.I)
LEVELS = ("off", "warning", "error")


def known_codes() -> dict[str, str]:
    """Every lint code with its short description, read from the table in :mod:`.lint`'s docstring."""
    found = re.findall(r"([EW]\d{3}) (.+?)(?=\s{2,}|\n|$)", lint.__doc__ or "")
    return {**dict(found), **OWN_CODES}


@dataclass
class Suppression:
    """One ``ignore`` comment: where it is written, the line it covers, its codes (empty: all)."""

    line: int
    col: int
    target: int
    codes: tuple[str, ...]
    source_line: str
    used: set[str] = field(default_factory=set)

    def covers(self, diag: Diagnostic) -> bool:
        return diag.line == self.target and (not self.codes or diag.code in self.codes)


def suppressions(text: str, comments: Iterable[ast.Comment]) -> list[Suppression]:
    """The ignore comments of a file, each with the line it covers."""
    lines = text.splitlines()
    out: list[Suppression] = []
    for comment in comments:
        found = _DIRECTIVE.search(comment.text)
        if not found:
            continue
        codes = tuple(c.strip().upper() for c in (found.group(1) or "").split(",") if c.strip())
        source = lines[comment.line - 1] if comment.line <= len(lines) else ""
        own_line = not source[: comment.col - 1].strip()
        target = _next_code_line(lines, comment.line) if own_line else comment.line
        out.append(Suppression(comment.line, comment.col + found.start(), target, codes, source))
    return out


def _next_code_line(lines: Sequence[str], after: int) -> int:
    for number in range(after + 1, len(lines) + 1):
        stripped = lines[number - 1].strip()
        if stripped and not stripped.startswith("#"):
            return number
    return 0


def apply_suppressions(
    diags: Sequence[Diagnostic], path: str, found: Sequence[Suppression], disabled: Iterable[str] = ()
) -> list[Diagnostic]:
    """``diags`` of one file without the suppressed ones, plus W501/W502 about the suppressions.

    Codes in ``disabled`` (turned off in configs/lint.yaml) are never reported as unused.
    """
    kept: list[Diagnostic] = []
    for diag in diags:
        cover = next((s for s in found if s.covers(diag)), None)
        if cover is None:
            kept.append(diag)
        else:
            cover.used.add(diag.code)
    known, off = known_codes(), set(disabled)
    for s in found:
        kept.extend(_about(s, path, known, off))
    return kept


def _about(s: Suppression, path: str, known: Mapping[str, str], off: set[str]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    where = {"path": path, "line": s.line, "col": s.col, "source_line": s.source_line, "severity": "warning"}
    end = {"end_line": s.line, "end_col": len(s.source_line.rstrip()) + 1}
    for code in s.codes:
        if code not in known:
            out.append(Diagnostic(**where, code=UNKNOWN, message=f"unknown code {code} in suppression", **end))
    unused = [c for c in s.codes if c in known and c not in s.used and c not in off]
    if not s.codes and not s.used:
        out.append(Diagnostic(**where, code=UNUSED, message="unused suppression: nothing to ignore here", **end))
    elif unused:
        hint = "remove it, or the codes no longer reported"
        message = f"unused suppression: no {', '.join(unused)} here"
        out.append(Diagnostic(**where, code=UNUSED, message=message, hint=hint, **end))
    return out


def apply_severities(diags: Iterable[Diagnostic], severity: Mapping[str, str]) -> list[Diagnostic]:
    """Findings with configured severities: ``off`` drops a code; syntax errors (E001) stay errors."""
    out: list[Diagnostic] = []
    for diag in diags:
        level = severity.get(diag.code) if diag.code != "E001" else None
        if level == "off":
            continue
        out.append(replace(diag, severity=level) if level else diag)
    return out


def at_or_above(diags: Iterable[Diagnostic], level: str) -> list[Diagnostic]:
    """The findings at ``level`` (error|warning) or above: those that fail a run."""
    floor = LEVELS.index(level)
    return [d for d in diags if LEVELS.index(d.severity) >= floor if d.severity in LEVELS]
