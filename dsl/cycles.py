"""Rules that keep switching each other on and off through `assert` and `retract` (E112).

Forward chaining (REFERENCE.md) fires a rule again only after its condition became false and
then true. So rules loop for ever only when each of them is switched on by another one's write
and switched off again by the writes of the group: ``ping`` asserts ``pong`` and retracts
``ping``, ``pong`` asserts ``ping`` and retracts ``pong``. The engines stop such a program at run
time (every request fails); this finds the groups before it runs.

The check is built to keep quiet rather than guess. A rule reads a fact when its condition tests
``fact NAME``; its writes are its asserts and retracts (the last one per fact counts, as in one
firing). A group is reported only when, over the normal form of each rule's condition:

- each rule is switched on by the write of another rule of the group (a graph edge; the group is
  a strongly connected part of that graph, so every rule is on a cycle),
- the writes of the group can switch each rule off again, and every fact test of the rule that
  they switch off is switched on again by another rule of it (else the rule fires once and rests),
- the rules' other conditions (domains, text, callers, ...) can hold on one request together,
- each rule can fire at all, starting from no asserted fact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from typing import Any, Callable, Sequence

from . import ast, compiler, ir
from .satisfiability import Literal, contradicts, dnf, never

Report = Callable[[str, ast.Pos, str, str, str, str], None]
RETRACTED = object()  # the value a retract leaves: the fact is missing
MAX_COMBINATIONS = 512


@dataclass(frozen=True)
class _FactTest:
    positive: bool
    cond: Any  # the IR condition on fact.NAME

    def holds(self, value: Any) -> bool:
        """Is the test true once the fact has ``value`` (RETRACTED: missing)?"""
        return _truth(self.cond, value) == self.positive


@dataclass
class _Node:
    index: int
    conjuncts: list[tuple[dict[str, list[_FactTest]], list[Literal]]]  # (fact tests, other literals)
    writes: dict[str, Any]  # fact.NAME -> value or RETRACTED
    always: bool = False  # the condition always holds (`fact a or not fact a`): it fires once


def _truth(cond: Any, value: Any) -> bool:
    """How the engines read a fact test (arbiter.routing.engine.semantics.leaf), for one value."""
    if isinstance(cond, ir.Exists):
        return value is not RETRACTED and value not in (None, False)
    if value is RETRACTED:
        return False
    try:
        if isinstance(cond, ir.Compare):
            return _compare(cond.op, value, cond.value)
        if isinstance(cond, ir.OneOf):
            return value in cond.values
        if isinstance(cond, ir.Contains):
            return isinstance(value, (list, tuple)) and cond.value in value
        if isinstance(cond, ir.Matches):
            return isinstance(value, str) and re.search(cond.pattern, value) is not None
    except (TypeError, re.error):
        return False
    return False


def _compare(op: str, left: Any, right: Any) -> bool:
    return bool(ir.COMPARISONS[op](left, right))


def _node(index: int, rule: ast.Rule) -> _Node | None:
    """A rule's fact tests and writes; None when its condition is too large to reason about."""
    conjuncts = dnf(rule.when) if rule.when is not None else [[]]
    if conjuncts is None:
        return None
    shaped = []
    for conjunct in conjuncts:
        if contradicts(conjunct):
            continue
        tests: dict[str, list[_FactTest]] = {}
        others: list[Literal] = []
        for positive, atom in conjunct:
            cond = compiler.condition(atom)
            fact = getattr(cond, "fact", "")
            if fact.startswith("fact."):
                tests.setdefault(fact, []).append(_FactTest(positive, cond))
            else:
                others.append((positive, atom))
        shaped.append((tests, others))
    writes: dict[str, Any] = {}
    for act in rule.then:
        if act.op in ("assert", "retract"):
            written = compiler.action(act)
            writes[f"fact.{act.target}"] = written.value if isinstance(written, ir.AssertFact) else RETRACTED
    always = rule.when is not None and never(ast.Cond("not", children=(rule.when,)))
    return _Node(index, shaped, writes, always)


def _switches_on(writer: _Node, reader: _Node) -> bool:
    """Can ``writer``'s writes make one of ``reader``'s conjuncts true (and none of it false)?"""
    for tests, _ in reader.conjuncts:
        touched = [fact for fact in tests if fact in writer.writes]
        if touched and all(all(t.holds(writer.writes[f]) for t in tests[f]) for f in touched):
            return True
    return False


def _values(group: list[_Node], fact: str) -> list[Any]:
    return [n.writes[fact] for n in group if fact in n.writes]


def _sustained(node: _Node, group: list[_Node], possible: dict[str, list[Any]]) -> bool:
    """Can the group's writes switch the rule off, and on again each time? (see the module doc)

    A fact no rule of the group writes keeps its value while the group runs: a conjunct testing
    it counts only when some value it can have (one any rule asserts, or none) passes the test.
    A test switched off must be switched on again by another rule: the rule cannot fire to do it.
    """
    if node.always:
        return False
    others = [n for n in group if n is not node]
    sustainable = False
    for tests, _ in node.conjuncts:
        checks = [
            (t, _values(group, f), _values(others, f), possible.get(f, [RETRACTED]))
            for f, ts in tests.items()
            for t in ts
        ]
        if not all(values or _may_pass(t, fixed) for t, values, _, fixed in checks):
            continue  # a fact the group leaves alone keeps this conjunct false
        if not any(not t.holds(v) for t, values, _, _ in checks for v in values):
            return False  # this conjunct stays true: the rule is never switched off
        if all(not values or _may_pass(t, again) for t, values, again, _ in checks):
            sustainable = True
    return sustainable


def _together(group: list[_Node]) -> bool:
    """Can the rules' conditions on the request itself hold at once? (Unknown counts as yes.)"""
    choices = [[others for _, others in n.conjuncts] for n in group]
    total = 1
    for c in choices:
        total *= len(c)
    if total > MAX_COMBINATIONS:
        return True
    return any(not contradicts([lit for part in combo for lit in part]) for combo in product(*choices))


def _fireable(nodes: list[_Node]) -> tuple[list[_Node], dict[str, list[Any]]]:
    """The rules that can ever fire, and the values each fact can take (RETRACTED: none yet).

    Every fact starts missing; a rule whose fact tests can each pass on some value reached so far
    may fire and adds the values it writes. Looser than the engines (facts are taken one by one),
    so a rule left out can never fire on any request.
    """
    possible: dict[str, list[Any]] = {}
    fired: list[_Node] = []
    waiting = list(nodes)
    progress = True
    while progress:
        progress = False
        for n in list(waiting):
            if any(
                all(_may_pass(t, possible.get(f, [RETRACTED])) for f, ts in tests.items() for t in ts)
                for tests, _ in n.conjuncts
            ):
                waiting.remove(n)
                fired.append(n)
                progress = True
                for fact, value in n.writes.items():
                    possible.setdefault(fact, [RETRACTED]).append(value)
    return sorted(fired, key=lambda n: n.index), possible


def _may_pass(test: _FactTest, values: list[Any]) -> bool:
    return any(test.holds(v) for v in values)


def _components(nodes: list[_Node], edges: dict[int, set[int]]) -> list[list[_Node]]:
    """Strongly connected parts of the graph with more than one rule (Tarjan, iterative)."""
    by_index = {n.index: n for n in nodes}
    order: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    found: list[list[_Node]] = []
    for root in by_index:
        if root in order:
            continue
        work = [(root, iter(sorted(edges.get(root, ()) & by_index.keys())))]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            at, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[at])
                if low[at] == order[at]:
                    part = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        part.append(by_index[top])
                        if top == at:
                            break
                    if len(part) > 1:
                        found.append(sorted(part, key=lambda n: n.index))
            elif child not in order:
                order[child] = low[child] = len(order)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ()) & by_index.keys()))))
            elif child in on_stack:
                low[at] = min(low[at], order[child])
    return found


def loops(rules: Sequence[ast.Rule]) -> list[list[int]]:
    """Groups of rules (indices into ``rules``, in source order) that would fire each other for ever."""
    nodes, possible = _fireable([n for i, r in enumerate(rules) if (n := _node(i, r)) is not None])
    readers: dict[str, list[_Node]] = {}
    for n in nodes:
        for fact in {f for tests, _ in n.conjuncts for f in tests}:
            readers.setdefault(fact, []).append(n)
    edges: dict[int, set[int]] = {}
    for writer in nodes:
        for fact in writer.writes:
            for reader in readers.get(fact, ()):
                if reader is not writer and _switches_on(writer, reader):
                    edges.setdefault(writer.index, set()).add(reader.index)
    linked = set(edges).union(*edges.values()) if edges else set()
    candidates = [n for n in nodes if n.index in linked]
    found: list[list[int]] = []
    pending = _components(candidates, edges)
    while pending:
        group = pending.pop()
        kept = [n for n in group if _sustained(n, group, possible)]
        if len(kept) < len(group):
            pending.extend(_components(kept, edges))
        elif _together(group):
            found.append([n.index for n in group])
    return sorted(found)


def check(report: Report, rules: Sequence[tuple[str, ast.Rule]]) -> None:
    """E112 once per group, at its first rule in source order, naming every rule of it."""
    for group in loops([rule for _, rule in rules]):
        path, first = rules[group[0]]
        named = [f"'{rules[i][1].name}' ({rules[i][0]}:{rules[i][1].pos.line})" for i in group]
        listed = ", ".join(named[:-1]) + " and " + named[-1]
        report(
            path,
            first.pos,
            "error",
            "E112",
            f"rules {listed} switch each other on and off with assert/retract: forward chaining would never settle",
            f"let one of them fire once: add `and not fact {first.name}-done` to its condition and "
            f"`assert {first.name}-done` to its actions",
        )
