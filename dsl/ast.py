"""The .arb syntax tree: plain frozen dataclasses, each with the line and column it came from.

Conditions and actions are kept generic (an operator name plus arguments) because the same
shapes are consumed three ways — compiled to IR, printed by the formatter, checked by lint —
and one ``op`` switch per consumer is easier to follow than a class per keyword.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


@dataclass(frozen=True)
class Value:
    """A literal or reference: kind is str, number, bool, none, param ($x), ref (step.field), word."""

    kind: str
    value: Any
    pos: Pos = Pos(0, 0)


@dataclass(frozen=True)
class Cond:
    """``op`` is and/or/not or one atom kind (domain, context, compare, text_matches, ...)."""

    op: str
    args: tuple[Any, ...] = ()
    children: tuple[Cond, ...] = ()
    pos: Pos = Pos(0, 0)


@dataclass(frozen=True)
class Action:
    """``op`` is prefer/avoid/require/exclude/collaborate/strategy/assert/retract."""

    op: str
    target: str
    weight: float | None = None
    value: Value | None = None
    on: str | None = None
    after: tuple[str, ...] = ()
    parallel: bool = False
    pos: Pos = Pos(0, 0)


@dataclass(frozen=True)
class Domain:
    name: str
    keywords: tuple[str, ...] = ()
    synonyms: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()
    pos: Pos = Pos(0, 0)
    item_lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Pattern:
    name: str
    phrases: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()  # as written: /body/flags
    pos: Pos = Pos(0, 0)
    item_lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Rule:
    name: str
    priority: int = 0
    when: Cond | None = None
    then: tuple[Action, ...] = ()
    because: str | None = None
    pos: Pos = Pos(0, 0)
    clause_pos: dict[str, Pos] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Capabilities:
    plugin: str
    weights: tuple[tuple[str, float], ...] = ()
    pos: Pos = Pos(0, 0)
    item_lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Param:
    name: str
    type: str | None = None
    default: Value | None = None
    pos: Pos = Pos(0, 0)


@dataclass(frozen=True)
class Step:
    name: str
    plugin: str
    command: str
    args: tuple[tuple[str, Value], ...] = ()
    when: Cond | None = None
    timeout_ms: int | None = None
    retry: int | None = None
    compensate: str | None = None
    compensate_args: tuple[tuple[str, Value], ...] = ()
    pos: Pos = Pos(0, 0)
    # where each argument's name was written (parallel to args), for findings about parameters
    arg_pos: tuple[Pos, ...] = field(default=(), compare=False, hash=False)
    compensate_arg_pos: tuple[Pos, ...] = field(default=(), compare=False, hash=False)


@dataclass(frozen=True)
class Branch:
    cond: Cond
    then: tuple[ChainItem, ...] = ()
    otherwise: tuple[ChainItem, ...] = ()
    pos: Pos = Pos(0, 0)


ChainItem = Union[Step, Branch]


@dataclass(frozen=True)
class Chain:
    name: str
    kind: str = "sequential"  # sequential | parallel | saga
    params: tuple[Param, ...] = ()
    timeout_ms: int | None = None
    items: tuple[ChainItem, ...] = ()
    pos: Pos = Pos(0, 0)
    on_failure: str | None = None  # fail-fast | wait-all, as written (None: not written)


@dataclass(frozen=True)
class ParameterBinding:
    """One line of a ``parameters`` block: where a command's parameter is read from the text."""

    name: str
    regexes: tuple[str, ...] = ()  # as written: /body/flags
    default: Value | None = None
    pos: Pos = Pos(0, 0)
    regex_pos: tuple[Pos, ...] = field(default=(), compare=False, hash=False)


@dataclass(frozen=True)
class ParameterBindings:
    """``parameters PLUGIN COMMAND { ... }``: how a routed request's text fills a command's parameters."""

    plugin: str
    command: str
    items: tuple[ParameterBinding, ...] = ()
    pos: Pos = Pos(0, 0)
    plugin_pos: Pos = field(default=Pos(0, 0), compare=False, hash=False)
    command_pos: Pos = field(default=Pos(0, 0), compare=False, hash=False)


Decl = Union[Domain, Pattern, Rule, Capabilities, Chain, ParameterBindings]


@dataclass(frozen=True)
class Comment:
    text: str
    line: int
    col: int


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    path: str
    decls: tuple[Decl, ...]
    comments: tuple[Comment, ...] = ()


def steps(items: tuple[ChainItem, ...]) -> list[Step]:
    """Every step of a chain, branches included, in source order."""
    out: list[Step] = []
    for item in items:
        if isinstance(item, Step):
            out.append(item)
        else:
            out.extend(steps(item.then))
            out.extend(steps(item.otherwise))
    return out
