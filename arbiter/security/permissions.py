"""Permission rules in the manner of NATS: allow and deny lists of name patterns, deny wins.

A name is split into tokens at a separator: services at ``.`` (``arbiter.route`` is two tokens,
``fastapi-backend`` one), topics at ``/`` (``routing/decisions``). Patterns mean what event
subscriptions mean (:mod:`arbiter.wire.topics`, whose matcher this is): ``*`` matches any
characters within one token (``arbiter.*`` matches ``arbiter.route``, ``jira-*`` matches
``jira-orchestrator``, neither matches across a separator); ``**`` as a whole token matches any
number of tokens, none included (``routing/**`` matches ``routing`` and everything under it;
``a.**.b`` matches ``a.b`` and ``a.x.y.b``). A pattern without wildcards names exactly one
name, no prefix.

``**`` inside a token could only mean what ``*`` means there; it is nearly always a pattern
written with the other kind's separator (``routing.**`` in a topic rule), which would miss what
its author meant, so :func:`pattern_problem` refuses it when a file is loaded.

Matching takes time linear in the name's length for a pattern of bounded size, and patterns are
bounded (``MAX_PATTERN`` characters), so no pattern can stall the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arbiter.wire.topics import ANY_SEGMENTS, topic_matches

MAX_PATTERN = 256  # characters; a longer pattern is refused
SERVICE_SEPARATOR = "."
TOPIC_SEPARATOR = "/"


def matches(pattern: str, name: str, separator: str) -> bool:
    """Whether ``name`` matches ``pattern``, both split at ``separator`` (see the module docstring)."""
    return topic_matches(pattern, name, separator)


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
    partial = next((t for t in tokens if ANY_SEGMENTS in t and t != ANY_SEGMENTS), None)
    if partial is not None:
        whole = "" if partial == pattern else f" of {pattern!r}"
        return (
            f"'**' inside the token {partial!r}{whole}",
            f"{kind}s are {separator!r}-separated and '**' stands for whole tokens, e.g. {example!r};"
            " within a token '*' matches any characters",
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

    def grants_subscription(self, subscription: str) -> bool:
        """Whether every topic ``subscription`` can deliver is allowed and none is denied. A plain
        subscription delivers every topic that starts with it (ZeroMQ filters by prefix), a
        wildcard one the topics it matches, so both deliver only topics starting with its
        literal head. It is granted when an allow rule is a literal head and ``**`` (``"**"``,
        ``"routing/**"``) that the subscription's head starts with, and no deny rule's head and
        the subscription's could begin the same topic: judged from heads, so in doubt a
        subscription is refused, never granted wider than the rules."""
        head = literal_head(subscription)
        if any(literal_head(d).startswith(head) or head.startswith(literal_head(d)) for d in self.deny):
            return False
        return any(_covers(pattern, head) for pattern in self.allow)

    def to_json(self) -> dict[str, list[str]]:
        return {"allow": list(self.allow), "deny": list(self.deny)}


def literal_head(pattern: str) -> str:
    """What every name ``pattern`` matches starts with: its text before the first ``*``."""
    return pattern.split("*", 1)[0]


def _covers(pattern: str, head: str) -> bool:
    """Whether ``pattern`` matches every topic that starts with ``head``."""
    if pattern != ANY_SEGMENTS and not pattern.endswith(TOPIC_SEPARATOR + ANY_SEGMENTS):
        return False
    stem = pattern[:-2]
    return "*" not in stem and head.startswith(stem)
