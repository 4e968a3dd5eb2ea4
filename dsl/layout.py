"""What the syntax tree forgets and the formatter keeps: where blocks close, and how a condition
written over several lines was broken (its line breaks and parentheses).

A light scan of the source into tokens (strings and regexes whole, comments dropped) is enough:
the tree says what each construct means; this says only where its text lies.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

_SCAN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)|(?P<tok>"(?:\\.|[^"\\\n])*"|/(?:\\.|[^/\\\n])+/[ims]*"""
    r"""|[A-Za-z_][A-Za-z0-9_\-]*(?::[A-Za-z0-9_\-]+)?|-?\d[0-9a-z.]*|==|!=|<=|>=|->|.)"""
)
_OPENERS, _CLOSERS = "([", ")]"
_NO_SPACE_AFTER = {"(", "[", "$", "."}
_NO_SPACE_BEFORE = {")", "]", ",", "."}
RULE_CLAUSES = frozenset({"then", "because", "priority", "when", "}"})
STEP_CLAUSES = frozenset({"with", "timeout", "retry", "compensate", "step", "if", "}"})  # end a step's `when`
STEP_END = frozenset({"step", "if", "}"})  # where a step's options end
BRANCH_BODY = frozenset({"{"})


@dataclass(frozen=True)
class Token:
    text: str
    line: int
    col: int


@dataclass(frozen=True)
class CondLine:
    """One source line of a condition: its tokens joined, and its nesting depth in parentheses."""

    line: int
    text: str
    depth: int


class Source:
    """The tokens of one file, with its braces matched."""

    def __init__(self, text: str) -> None:
        starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.tokens: list[Token] = []
        for found in _SCAN.finditer(text):
            if found.lastgroup == "tok":
                line = bisect_right(starts, found.start())
                self.tokens.append(Token(found.group(), line, found.start() - starts[line - 1] + 1))
        self.match: dict[int, int] = {}
        stack: list[int] = []
        for index, tok in enumerate(self.tokens):
            if tok.text == "{":
                stack.append(index)
            elif tok.text == "}" and stack:
                self.match[stack.pop()] = index

    def index_at(self, line: int, col: int) -> int:
        """The first token at or after ``line:col``."""
        return next((i for i, t in enumerate(self.tokens) if (t.line, t.col) >= (line, col)), len(self.tokens))

    def closing_line(self, line: int, col: int, skip: int = 0) -> int | None:
        """The line of the ``}`` closing the first block opened at or after ``line:col``
        (``skip`` blocks on: 1 is an ``else`` block after its ``if``)."""
        index = self.index_at(line, col)
        for _ in range(skip + 1):
            index = next((i for i in range(index, len(self.tokens)) if self.tokens[i].text == "{"), -1)
            if index < 0 or index not in self.match:
                return None
            opened, index = index, self.match[index]
        return self.tokens[self.match[opened]].line

    def keyword_after(self, line: int, col: int, keyword: str, end: frozenset[str]) -> tuple[int, int] | None:
        """Where ``keyword`` is written after the token at ``line:col`` and before any of ``end``."""
        for tok in self.tokens[self.index_at(line, col) + 1 :]:
            if tok.text in end:
                return None
            if tok.text == keyword:
                return tok.line, tok.col
        return None

    def condition(self, line: int, col: int, keyword: str, stops: frozenset[str]) -> list[CondLine] | None:
        """The condition after ``keyword`` at ``line:col``, line by line as written; None when it
        is written on one line (the formatter then prints it from the tree)."""
        start = self.index_at(line, col)
        start += start < len(self.tokens) and self.tokens[start].text == keyword
        found: list[Token] = []
        depth = 0
        for tok in self.tokens[start:]:
            if depth == 0 and tok.text in stops:
                break
            depth += (tok.text in _OPENERS) - (tok.text in _CLOSERS)
            found.append(tok)
        if not found or found[0].line == found[-1].line:
            return None
        return _lines(found)


def _lines(found: list[Token]) -> list[CondLine]:
    out: list[CondLine] = []
    depth = 0
    group: list[Token] = []
    for tok in found + [Token("", -1, 0)]:
        if group and tok.line != group[0].line:
            leading = len(group) - len(_lstrip_closers(group))
            out.append(CondLine(group[0].line, join(group), max(depth - leading, 0)))
            depth += sum((t.text in _OPENERS) - (t.text in _CLOSERS) for t in group)
            group = []
        group.append(tok)
    return out


def _lstrip_closers(group: list[Token]) -> list[Token]:
    index = 0
    while index < len(group) and group[index].text in _CLOSERS:
        index += 1
    return group[index:]


def join(tokens: list[Token]) -> str:
    """Tokens of one line with canonical spacing: one space, none inside brackets or before commas."""
    text = ""
    for index, tok in enumerate(tokens):
        tight = index == 0 or tokens[index - 1].text in _NO_SPACE_AFTER or tok.text in _NO_SPACE_BEFORE
        text += ("" if tight else " ") + tok.text
    return text
