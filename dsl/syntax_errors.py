"""Syntax errors in the words a rule author types, placed where the mistake was made.

Lark reports the token it could not use; for an unclosed bracket or string that is the end of
the block, far from the mistake. So a block that fails to parse is first scanned for strings,
regular expressions and brackets that do not pair up, and that finding, at the opening, wins.
Otherwise Lark's error is translated: the terminals the parser would accept in its state (not
every terminal of an LALR state's merged lookahead), as the author writes them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterable

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

BOM = "\ufeff"
REGEX_FLAGS = "ims"
PAIRS = {"}": "{", ")": "(", "]": "["}
MAX_EXPECTED = 10
KEYWORDS = (
    "domain pattern rule capabilities chain keywords synonyms files phrases regex priority when then because "
    "and or not score context fact text matches contains file plugin circuit caller is in prefer by avoid "
    "require exclude collaborate on after parallel strategy assert retract step with timeout retry compensate "
    "if else sequential saga true false none parameters from default fail-fast wait-all"
).split()
CLAUSE_KEYWORDS = {"priority", "when", "then", "because", "step", "with", "timeout", "retry", "compensate", "default"}
TERMINAL_WORDS = {
    "IDENT": "a name",
    "STRING": "a string",
    "REGEX": "a regular expression (/.../)",
    "NUMBER": "a number",
    "SIGNED_INT": "a whole number",
    "INT": "a whole number",
    "DURATION": "a duration (e.g. 500ms, 30s, 2m, 1h30m)",
    "CMP": "a comparison (==, !=, <, <=, >, >=)",
    "CHAIN_KIND": "sequential, parallel or saga",
    "ON_FAILURE": "fail-fast or wait-all",
}


@dataclass(frozen=True)
class SyntaxProblem:
    line: int
    col: int
    message: str
    hint: str = ""


def strip_bom(text: str) -> str:
    """Editors on Windows may start a UTF-8 file with a byte-order mark; it is no character."""
    return text[1:] if text.startswith(BOM) else text


# ---------------------------------------------------------------- pairing


def _closing_quote(line: str, start: int, quote: str) -> int:
    """Index of the quote closing the one at ``start`` on this line, or -1."""
    i = start + 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
        elif line[i] == quote:
            return i
        else:
            i += 1
    return -1


def scan(block: str, offset: int) -> SyntaxProblem | None:
    """The first string, regex or bracket of a block that does not pair up, at its opening."""
    opened: list[tuple[str, int, int]] = []
    for number, line in enumerate(block.split("\n"), offset + 1):
        i = 0
        while i < len(line):
            char = line[i]
            if char == "#":
                break
            if char in '"/':
                end = _closing_quote(line, i, char)
                if end < 0:
                    return _unterminated(char, number, i + 1)
                i = end + 1
                continue
            if char in "{([":
                opened.append((char, number, i + 1))
            elif char in PAIRS:
                problem = _close(opened, char, number, i + 1)
                if problem is not None:
                    return problem
            i += 1
    if opened:
        char, line_no, col = opened[-1]
        return _never_closed(char, line_no, col)
    return None


def _close(opened: list[tuple[str, int, int]], char: str, line: int, col: int) -> SyntaxProblem | None:
    if not any(o[0] == PAIRS[char] for o in opened):
        hint = "remove it" if not opened else f"the innermost open bracket is `{opened[-1][0]}`"
        return SyntaxProblem(line, col, f"`{char}` closes nothing", hint)
    top = opened.pop()
    if top[0] != PAIRS[char]:
        return _never_closed(*top)
    return None


def _never_closed(char: str, line: int, col: int) -> SyntaxProblem:
    closing = {v: k for k, v in PAIRS.items()}[char]
    return SyntaxProblem(line, col, f"`{char}` opened at {line}:{col} is never closed", f"add the matching `{closing}`")


def _unterminated(char: str, line: int, col: int) -> SyntaxProblem:
    if char == '"':
        return SyntaxProblem(line, col, "unterminated string", 'a string ends with `"` on the line it starts')
    return SyntaxProblem(line, col, "unterminated regular expression", "a regular expression ends with `/` on its line")


# ---------------------------------------------------------------- regex flags


def regex_flags(tokens: Iterable[Token], offset: int) -> list[SyntaxProblem]:
    """A REGEX token's flags other than i, m, s, each named at its letter."""
    problems = []
    for tok in tokens:
        text = str(tok)
        flags = text[text.rfind("/") + 1 :]
        for index, letter in enumerate(flags):
            if letter not in REGEX_FLAGS:
                col = (tok.column or 1) + len(text) - len(flags) + index
                message = f"unknown regex flag '{letter}'; flags are {', '.join(REGEX_FLAGS)}"
                problems.append(SyntaxProblem((tok.line or 1) + offset, col, message))
    return problems


# ---------------------------------------------------------------- Lark's errors


def _word(name: str, parser: Lark) -> str:
    """How the author writes a terminal: a description, a keyword, or quoted punctuation."""
    if name in TERMINAL_WORDS:
        return TERMINAL_WORDS[name]
    term = next((t for t in parser.terminals if t.name == name), None)
    if term is not None and term.pattern.type == "str":
        value = term.pattern.value
        return value if value[:1].isalpha() else f'"{value}"'
    return name.lower()


def expected_words(names: Iterable[str], parser: Lark) -> str:
    """``a name, priority, when or "}"``: descriptions first, then keywords, then punctuation."""
    words = sorted({_word(n, parser) for n in names if n != "$END"}, key=lambda w: (w[0] == '"', " " not in w, w))
    if len(words) > MAX_EXPECTED:
        words = words[:MAX_EXPECTED] + ["..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1] if words else ""


def _keyword_read_as_value(block: str, token: Token) -> str:
    """A hint when the word before ``token`` is a keyword the parser took for a name or value
    (``when urgency == then ...``: the value is missing and `then` filled its place)."""
    lines = block.split("\n")
    before = "\n".join(lines[: (token.line or 1) - 1] + [lines[(token.line or 1) - 1][: (token.column or 1) - 1]])
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_-]*|\S", before)
    if len(words) >= 2 and words[-1] in CLAUSE_KEYWORDS and words[-2] not in PAIRS.values():
        return f"'{words[-1]}' was read as a name or value here: is something missing before it?"
    return ""


def from_lark(exc: UnexpectedInput, offset: int, parser: Lark, block: str = "") -> SyntaxProblem:
    """Lark's error in words, at the token (or character) it stopped at."""
    line = (getattr(exc, "line", 1) or 1) + offset
    col = getattr(exc, "column", 1) or 1
    if isinstance(exc, UnexpectedCharacters):
        char = exc.char if exc.char not in "\n" else "end of line"
        return SyntaxProblem(line, col, f"unexpected character {char!r}", "check quotes and brackets")
    names: Any = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ()
    expected = expected_words(names, parser)
    token = exc.token if isinstance(exc, UnexpectedToken) else None
    if token is None or token.type == "$END":
        return SyntaxProblem(line, col, f"the declaration ends too soon; expected {expected}")
    hint = _keyword_read_as_value(block, token) if block else ""
    if token.type == "IDENT" and not hint:
        close = difflib.get_close_matches(str(token), KEYWORDS, n=1, cutoff=0.75)
        hint = f"did you mean '{close[0]}'?" if close else ""
    return SyntaxProblem(line, col, f"unexpected {str(token)!r}; expected {expected}", hint)
