"""What the durable-rules engine can hold, measured on durable-rules 2.0.28.

The engine adapter gives each distinct leaf condition a boolean property of one fact and hands
every rule to durable-rules' Rete network. The native engine has fixed-size tables; past them it
refuses the rules (its error codes in brackets), fails a request, or hangs:

- at most 4,095 rules, one more being the adapter's own catch-all (106, ERR_RULE_LIMIT_EXCEEDED);
- at most 251 distinct leaf conditions: a fact carries at most 253 properties, two of them the
  adapter's (302, ERR_EVENT_MAX_PROPERTIES); past about 256 the compiler can also hang;
- at most 256 rules with the very same condition (108, ERR_RULE_BETA_LIMIT_EXCEEDED), and at most
  128 when that condition has an ``or`` (107, ERR_RULE_EXISTS_LIMIT_EXCEEDED);
- on a request, about 64 conditions and rules matching at once (303, ERR_MAX_STACK_SIZE): which
  requests do depends on their facts, so no count predicts it; the adapter answers such a
  request with the Python engine.

A program past a limit still runs: the adapter falls back to the Python engine, which has none and
gives the same results. Lint reports the rule that crosses the limit (W108) so the author knows
which engine runs the program; :func:`crossing` is the one reading of these limits both use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from . import ir

MAX_RULES = 4095
MAX_CONDITIONS = 251
MAX_SAME_CONDITION = 256
MAX_SAME_OR_CONDITION = 128


@dataclass(frozen=True)
class Crossing:
    """The first rule (by index in source order) past one of durable-rules' limits, and which."""

    index: int
    limit: str  # what durable-rules cannot hold, in words, naming the number


def _has_or(cond: ir.Condition, positive: bool = True) -> bool:
    """Whether the condition, negations pushed to its leaves, has an ``or`` of two or more parts."""
    if isinstance(cond, ir.Not):
        return _has_or(cond.item, not positive)
    if isinstance(cond, (ir.All, ir.Any_)):
        disjunction = isinstance(cond, ir.Any_) == positive
        return (disjunction and len(cond.items) > 1) or any(_has_or(c, positive) for c in cond.items)
    return False


def crossing(rules: Sequence[ir.Rule]) -> Crossing | None:
    """The first rule that takes the program past a limit of durable-rules, or None."""
    seen_leaves: set[str] = set()
    same: dict[str, int] = {repr(ir.All(())): 1}  # the adapter's catch-all has the empty condition
    for index, rule in enumerate(rules):
        if index == MAX_RULES:
            return Crossing(index, f"durable-rules holds at most {MAX_RULES:,} rules")
        for leaf in ir.leaves(rule.when):
            seen_leaves.add(repr(leaf))
        if len(seen_leaves) > MAX_CONDITIONS:
            return Crossing(index, f"durable-rules holds at most {MAX_CONDITIONS} distinct conditions")
        key = repr(rule.when)
        same[key] = same.get(key, 0) + 1
        cap = MAX_SAME_OR_CONDITION if _has_or(rule.when) else MAX_SAME_CONDITION
        if same[key] > cap:
            return Crossing(index, f"durable-rules holds at most {cap} rules with the very same condition")
    return None
