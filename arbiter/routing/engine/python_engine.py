"""The pure-Python matcher: each rule's condition compiled to a closure over the fact lookup.

Used where durable-rules does not import (Python 3.13+) or when asked for. The agenda asks for
the active rules only when working memory changed, so rules without asserts cost one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from arbiter.dsl import ir
from arbiter.routing.engine.semantics import Evaluation, Memory, Predicate, leaf, run_agenda


def predicate(cond: ir.Condition) -> Predicate:
    if isinstance(cond, ir.All):
        parts = [predicate(c) for c in cond.items]
        return lambda get: all(p(get) for p in parts)
    if isinstance(cond, ir.Any_):
        parts = [predicate(c) for c in cond.items]
        return lambda get: any(p(get) for p in parts)
    if isinstance(cond, ir.Not):
        inner = predicate(cond.item)
        return lambda get: not inner(get)
    return leaf(cond)


@dataclass(frozen=True)
class PythonRules:
    ruleset: ir.RuleSet
    predicates: tuple[Predicate, ...]


class PythonEngine:
    name = "python"

    def compile(self, ruleset: ir.RuleSet) -> PythonRules:
        return PythonRules(ruleset, tuple(predicate(r.when) for r in ruleset.rules))

    def evaluate(self, compiled: PythonRules, facts: Mapping[str, Any]) -> Evaluation:
        preds = compiled.predicates

        def active(get: Memory) -> set[int]:
            return {i for i, p in enumerate(preds) if p(get)}

        return run_agenda(compiled.ruleset.rules, facts, active, self.name, compiled.ruleset.hash)

    def release(self, compiled: PythonRules) -> None:
        """Nothing to free: closures are garbage collected."""
