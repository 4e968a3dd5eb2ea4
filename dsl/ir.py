"""The compiled form of routing rules: what the compiler emits and the rules engine runs.

The IR is deliberately small and engine-neutral. Both engines (durable-rules behind its
adapter, and the pure-Python evaluator) consume exactly these classes, so one conformance
suite can hold them to the same semantics.

Facts are a flat mapping of dotted names to values, built by the classifier and the
registry before evaluation, for example::

    text                         "build a fastapi endpoint"        (str)
    files                        ("src/api/users.py",)              (tuple of str)
    caller                       "jira-orchestrator" or None
    complexity                   "simple" | "moderate" | "complex"
    urgency                      1..10
    domain.backend               0.83   (present only when the domain was detected)
    context.fastapi              True
    pattern.rest-api             True
    plugin.fastapi-backend.health       "up" | "degraded" | "down"
    plugin.fastapi-backend.circuit      "closed" | "open" | "half-open"
    plugin.fastapi-backend.available    True
    fact.needs-auth              value asserted by a rule (True unless a value was given)

A missing fact compares false with everything except ``Not(Exists(...))``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Union

Scalar = Union[str, int, float, bool, None]


@dataclass(frozen=True)
class Source:
    """Where a construct was written, for explain and diagnostics."""

    path: str
    line: int
    col: int = 1


# ---------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Exists:
    """True when the fact is present and not None/False."""

    fact: str


@dataclass(frozen=True)
class Compare:
    """``fact op value`` with op one of == != < <= > >=."""

    fact: str
    op: str
    value: Scalar


@dataclass(frozen=True)
class OneOf:
    """The fact's scalar value is one of ``values``."""

    fact: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Contains:
    """The fact is a tuple/list that contains ``value``."""

    fact: str
    value: Scalar


@dataclass(frozen=True)
class Matches:
    """A regular expression (Python ``re`` syntax, searched, not anchored) on a string fact.

    ``flags`` is a string of ``i`` (ignore case), ``m`` (multi-line), ``s`` (dot-all).
    """

    fact: str
    pattern: str
    flags: str = ""


@dataclass(frozen=True)
class Glob:
    """Any string in a list fact (normally ``files``) matches the glob (``**`` spans folders)."""

    fact: str
    pattern: str


@dataclass(frozen=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Any_:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Union[Exists, Compare, OneOf, Contains, Matches, Glob, All, Any_, Not]


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Prefer:
    """Add ``weight`` to a plugin's score (negative weight: avoid)."""

    plugin: str
    weight: float


@dataclass(frozen=True)
class Require:
    """The plugin must take part (as primary when nothing else is required)."""

    plugin: str


@dataclass(frozen=True)
class Exclude:
    plugin: str


@dataclass(frozen=True)
class Collaborate:
    """Add ``plugin`` to the collaboration plan for ``domain``, after the named phases."""

    plugin: str
    domain: str | None = None
    after: tuple[str, ...] = ()
    parallel: bool = False


@dataclass(frozen=True)
class SetStrategy:
    strategy: str


@dataclass(frozen=True)
class AssertFact:
    """Assert ``fact.<name>`` (value True unless given); may trigger further rules."""

    name: str
    value: Scalar = True


@dataclass(frozen=True)
class RetractFact:
    name: str


Action = Union[Prefer, Require, Exclude, Collaborate, SetStrategy, AssertFact, RetractFact]


# ---------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One routing rule. Higher ``priority`` fires first; ties go by source order."""

    name: str
    when: Condition
    then: tuple[Action, ...]
    priority: int = 0
    reason: str = ""
    source: Source = Source("<memory>", 0, 0)


@dataclass(frozen=True)
class RuleSet:
    """All rules of a project, in source order, with a content hash recorded with decisions."""

    rules: tuple[Rule, ...]
    hash: str = ""


def condition_facts(cond: Condition) -> set[str]:
    """The fact names a condition reads (used by lint and by engines to index rules)."""
    if isinstance(cond, (All, Any_)):
        out: set[str] = set()
        for item in cond.items:
            out |= condition_facts(item)
        return out
    if isinstance(cond, Not):
        return condition_facts(cond.item)
    return {cond.fact}


# What each comparison operator of a `Compare` means, for every reader of the tree (the engines,
# lint's reasoning about rules).
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def leaves(cond: Condition) -> list[Condition]:
    """The leaf conditions of a condition (what ``All``, ``Any_`` and ``Not`` combine)."""
    if isinstance(cond, (All, Any_)):
        return [x for item in cond.items for x in leaves(item)]
    if isinstance(cond, Not):
        return leaves(cond.item)
    return [cond]
