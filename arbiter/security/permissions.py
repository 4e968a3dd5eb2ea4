"""Permission rules in the manner of NATS: allow and deny lists of name patterns, deny wins.

A name is split into tokens at a separator: services at ``.`` (``arbiter.route`` is two tokens,
``fastapi-backend`` one), topics at ``/`` (``routing/decisions``). A pattern is matched token
by token: ``*`` as a whole token matches exactly one token; ``**`` as a whole token matches any
number of tokens, none included, as the event bus's topics do (``routing/**`` matches
``routing`` and everything under it; ``a.**.b`` matches ``a.b`` and ``a.x.y.b``). Any other
token must be equal. A pattern without wildcards names exactly one name, no prefix.

Wildcards stand for whole tokens only: ``jira-*`` or ``routing.**`` in a topic rule would be
plain text that never matches what its author meant, so :func:`pattern_problem` refuses them
when a file is loaded (the matcher itself treats such a token as literal text).

Matching takes time linear in the name's length for a pattern of bounded size, and patterns are
bounded (``MAX_PATTERN`` characters): the runs of tokens between ``**`` are found left to right,
each at its earliest place, which is never worse than a later one since a ``**`` absorbs
whatever lies between. Each run is searched with a bit-parallel automaton (one step per token,
``*`` matching any), so there is no backtracking and no pattern can stall the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

MAX_PATTERN = 256  # characters; a longer pattern is refused
ANY_TOKEN = "*"
ANY_TOKENS = "**"
SERVICE_SEPARATOR = "."
TOPIC_SEPARATOR = "/"


@dataclass(frozen=True)
class _Run:
    """A run of tokens between ``**``: its length, and for each token the positions it may fill
    (as bits, ``*`` positions included) so a search advances one token at a time."""

    tokens: tuple[str, ...]
    fits: Mapping[str, int]
    wild: int

    @classmethod
    def of(cls, tokens: Sequence[str]) -> _Run:
        wild = sum(1 << i for i, token in enumerate(tokens) if token == ANY_TOKEN)
        fits: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if token != ANY_TOKEN:
                fits[token] = fits.get(token, wild) | (1 << i)
        return cls(tuple(tokens), fits, wild)

    def at(self, names: Sequence[str], start: int) -> bool:
        """Whether the run matches ``names`` from ``start`` on (the caller checked the length)."""
        return all(want in (ANY_TOKEN, names[start + i]) for i, want in enumerate(self.tokens))

    def find(self, names: Sequence[str], start: int, end: int) -> int:
        """The first index ``>= start`` where the run matches, ending by ``end``; -1 if none."""
        if not self.tokens:
            return start
        state, done = 0, 1 << (len(self.tokens) - 1)
        for index in range(start, end):
            state = ((state << 1) | 1) & self.fits.get(names[index], self.wild)
            if state & done:
                return index - len(self.tokens) + 1
        return -1


@lru_cache(maxsize=4096)
def _runs(pattern: str, separator: str) -> tuple[_Run, ...]:
    """The pattern's tokens split at each ``**``: one run more than there are ``**`` tokens."""
    runs: list[list[str]] = [[]]
    for token in pattern.split(separator):
        if token == ANY_TOKENS:
            runs.append([])
        else:
            runs[-1].append(token)
    return tuple(_Run.of(run) for run in runs)


def matches(pattern: str, name: str, separator: str) -> bool:
    """Whether ``name`` matches ``pattern``, both split at ``separator`` (see the module docstring)."""
    runs = _runs(pattern, separator)
    names = name.split(separator)
    first, last = runs[0], runs[-1]
    if len(runs) == 1:
        return len(names) == len(first.tokens) and first.at(names, 0)
    if sum(len(run.tokens) for run in runs) > len(names):
        return False
    end = len(names) - len(last.tokens)
    if not first.at(names, 0) or not last.at(names, end):
        return False
    position = len(first.tokens)
    for run in runs[1:-1]:
        found = run.find(names, position, end)
        if found < 0:
            return False
        position = found + len(run.tokens)
    return True


def pattern_problem(pattern: Any, separator: str) -> tuple[str, str] | None:
    """What is wrong with ``pattern`` as a rule's pattern, as (message, hint); None when nothing.

    Checked when a file is loaded, so a rule that could never match as meant is an error with a
    position instead of a silent refusal at run time.
    """
    kind = "service" if separator == SERVICE_SEPARATOR else "topic"
    example = "fastapi-backend.*" if kind == "service" else "routing/**"
    if not isinstance(pattern, str):
        return f"a pattern is a string, not {type(pattern).__name__}", f'quote it: "{pattern}"'
    if not pattern:
        return "empty pattern", f"name a {kind} or use wildcards, e.g. {example!r}"
    if len(pattern) > MAX_PATTERN:
        return (
            f"pattern of {len(pattern)} characters; at most {MAX_PATTERN} are accepted",
            f"shorten it with wildcards, e.g. {example!r}",
        )
    tokens = pattern.split(separator)
    if "" in tokens:
        return f"empty token in {pattern!r}", f"{kind}s are {separator!r}-separated; drop the extra {separator!r}"
    partial = next((t for t in tokens if "*" in t and t not in (ANY_TOKEN, ANY_TOKENS)), None)
    if partial is not None:
        whole = "" if partial == pattern else f" of {pattern!r}"
        return (
            f"wildcard inside the token {partial!r}{whole}",
            f"{kind}s are {separator!r}-separated and '*' or '**' stand for whole tokens, e.g. {example!r}",
        )
    return None


@dataclass(frozen=True)
class Rule:
    """Who may do one kind of thing: names matching a ``deny`` pattern never, else names matching
    an ``allow`` pattern. An empty ``allow`` allows nothing (default deny)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for pattern in (*self.allow, *self.deny):
            if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
                raise ValueError(f"not a pattern of at most {MAX_PATTERN} characters: {str(pattern)[:40]!r}")

    def permits(self, name: str, separator: str) -> bool:
        """Whether ``name`` (split at ``separator``) is allowed and not denied."""
        if any(matches(pattern, name, separator) for pattern in self.deny):
            return False
        return any(matches(pattern, name, separator) for pattern in self.allow)

    def to_json(self) -> dict[str, list[str]]:
        return {"allow": list(self.allow), "deny": list(self.deny)}
