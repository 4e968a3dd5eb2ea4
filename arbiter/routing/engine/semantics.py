"""The semantics every rules engine shares: working memory, the agenda, leaf conditions.

Semantics (both engines obey them; one conformance suite checks it):

- Working memory is the initial facts (read-only) plus facts asserted by rules
  (``fact.<name>``). ``RetractFact`` removes an asserted fact.
- A rule is *active* when its condition holds on the current working memory. A condition on a
  missing fact is false (``not`` of it is true).
- Agenda: among active rules that have not fired since they last became active, the one with
  the highest priority fires; ties go to source order. Firing records the rule and applies its
  ``assert``/``retract`` to working memory; the other actions are collected in firing order.
- Refraction: a rule that fired fires again only after its condition became false and then true.
- Stop when no rule is eligible. If working memory and the fired set repeat while rules keep
  firing (or a firing budget is exceeded) the evaluation would never end: :class:`RuleLoopError`
  names the rules that fired in the loop.

Two engines implement the matching — which rules are active for a working memory:
``durable_engine`` (durable-rules' Rete network; the only module importing it) and
``python_engine`` (a small evaluator, used where durable-rules does not import, e.g. Python 3.13+).
The agenda, refraction and loop detection are shared code here, so the engines can only differ
in matching, which the conformance suite compares.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from arbiter.dsl import ir
from arbiter.routing.globs import glob_regex

MISSING = object()


class EngineError(Exception):
    """Base of every rules engine failure."""


class CompileError(EngineError):
    pass


class EngineLimitError(CompileError):
    """The engine cannot hold these rules, or failed on a request for a limit of its own; the
    rules themselves are sound and another engine runs them (:mod:`.engines` falls back)."""


class ActionError(EngineError):
    def __init__(self, rule: str, cause: BaseException):
        super().__init__(f"rule '{rule}' failed while firing: {type(cause).__name__}: {cause}")
        self.rule = rule


class RuleLoopError(EngineError):
    def __init__(self, rules: Sequence[str], firings: int):
        names = ", ".join(dict.fromkeys(rules))
        super().__init__(
            f"rules keep firing without end ({firings} firings): {names}. They assert and retract "
            "facts that re-trigger each other; make one of the conditions stop the cycle."
        )
        self.rules = tuple(dict.fromkeys(rules))


@dataclass(frozen=True)
class Firing:
    rule: str
    priority: int
    reason: str
    source: ir.Source
    actions: tuple[ir.Action, ...]
    facts: Mapping[str, Any]  # the facts the rule's condition read, as they were when it fired


@dataclass(frozen=True)
class Evaluation:
    firings: tuple[Firing, ...]
    asserted: Mapping[str, Any]
    actions: tuple[ir.Action, ...]  # non-fact actions in firing order
    engine: str
    elapsed_us: float
    ruleset_hash: str = ""


# ---------------------------------------------------------------- leaf predicates


_FLAGS = {"i": re.I, "m": re.M, "s": re.S}

Memory = Callable[[str], Any]
Predicate = Callable[[Memory], bool]


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is MISSING:
        return False
    try:
        return ir.COMPARISONS[op](left, right)
    except TypeError:
        return False


def leaf(cond: ir.Condition) -> Predicate:
    """A compiled test of one leaf condition against a fact lookup."""
    fact = cond.fact  # type: ignore[union-attr]
    if isinstance(cond, ir.Exists):
        return lambda get: get(fact) not in (MISSING, None, False)
    if isinstance(cond, ir.Compare):
        op, value = cond.op, cond.value
        return lambda get: _compare(op, get(fact), value)
    if isinstance(cond, ir.OneOf):
        values = set(v for v in cond.values if v is not None)
        return lambda get: _hashable_in(get(fact), values)
    if isinstance(cond, ir.Contains):
        value = cond.value
        return lambda get: isinstance(get(fact), (list, tuple, set, frozenset)) and value in get(fact)
    if isinstance(cond, ir.Matches):
        flags = 0
        for letter in cond.flags:
            flags |= _FLAGS.get(letter, 0)
        regex = re.compile(cond.pattern, flags)
        return lambda get: isinstance(get(fact), str) and regex.search(get(fact)) is not None
    if isinstance(cond, ir.Glob):
        regex = glob_regex(cond.pattern)
        return lambda get: (
            isinstance(get(fact), (list, tuple)) and any(isinstance(f, str) and regex.match(f) for f in get(fact))
        )
    raise CompileError(f"unknown condition {cond!r}")


def _hashable_in(value: Any, values: set[Any]) -> bool:
    try:
        return value is not MISSING and value in values
    except TypeError:
        return False


# ---------------------------------------------------------------- the agenda


ActiveFn = Callable[[Memory], set[int]]


@dataclass
class _Memory:
    facts: Mapping[str, Any]
    asserted: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name in self.asserted:
            return self.asserted[name]
        return self.facts.get(name, MISSING)

    def apply(self, action: ir.Action) -> bool:
        """Apply an assert/retract; report whether working memory changed."""
        if isinstance(action, ir.AssertFact):
            key = f"fact.{action.name}"
            changed = self.asserted.get(key, MISSING) != action.value
            self.asserted[key] = action.value
            return changed
        if isinstance(action, ir.RetractFact):
            return self.asserted.pop(f"fact.{action.name}", MISSING) is not MISSING
        return False


def run_agenda(
    rules: Sequence[ir.Rule],
    facts: Mapping[str, Any],
    active_fn: ActiveFn,
    engine: str,
    ruleset_hash: str = "",
    budget: int | None = None,
) -> Evaluation:
    """Fire rules to quiescence (see the module docstring); ``active_fn`` is the matcher."""
    start = time.perf_counter()
    memory = _Memory(facts)
    budget = budget if budget is not None else 50 * len(rules) + 100
    fired: set[int] = set()
    firings: list[Firing] = []
    actions: list[ir.Action] = []
    seen: dict[tuple, int] = {}
    active = active_fn(memory.get)
    while True:
        fired &= active
        eligible = active - fired
        if not eligible:
            break
        index = min(eligible, key=lambda i: (-rules[i].priority, i))
        rule = rules[index]
        firings.append(_firing(rule, memory))
        fired.add(index)
        changed = False
        for action in rule.then:
            if isinstance(action, (ir.AssertFact, ir.RetractFact)):
                changed |= memory.apply(action)
            else:
                actions.append(action)
        state = (frozenset(memory.asserted.items()), frozenset(fired))
        if state in seen or len(firings) > budget:
            loop_from = seen.get(state, 0)
            raise RuleLoopError([f.rule for f in firings[loop_from:]], len(firings))
        seen[state] = len(firings)
        if changed:
            active = active_fn(memory.get)
    return Evaluation(
        firings=tuple(firings),
        asserted=dict(memory.asserted),
        actions=tuple(actions),
        engine=engine,
        elapsed_us=(time.perf_counter() - start) * 1e6,
        ruleset_hash=ruleset_hash,
    )


def _firing(rule: ir.Rule, memory: _Memory) -> Firing:
    read = {}
    for name in sorted(ir.condition_facts(rule.when)):
        value = memory.get(name)
        read[name] = None if value is MISSING else value
    return Firing(rule.name, rule.priority, rule.reason, rule.source, rule.then, read)
