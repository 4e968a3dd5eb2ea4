"""Two rules at one priority that can fire on the same request and set different strategies.

Rules of equal priority fire in source order, so which strategy a request gets would hang on
the order of the files, not on anything the author wrote: lint reports the second rule (E111).
Conditions that exclude each other (``caller is a`` / ``caller is b``) never fire together and
are not reported; :mod:`.satisfiability` decides that.
"""

from __future__ import annotations

from typing import Callable, Sequence

from . import ast
from .satisfiability import never, overlap

Report = Callable[[str, ast.Pos, str, str, str, str], None]


def _strategy(rule: ast.Rule) -> ast.Action | None:
    """The strategy the rule leaves in place (its last `strategy` action)."""
    chosen = [a for a in rule.then if a.op == "strategy"]
    return chosen[-1] if chosen else None


def check(report: Report, rules: Sequence[tuple[str, ast.Rule]]) -> None:
    """Report each rule whose strategy conflicts with an earlier rule's at the same priority."""
    by_priority: dict[int, list[tuple[str, ast.Rule, ast.Action]]] = {}
    for path, rule in rules:
        act = _strategy(rule)
        if act is not None and not (rule.when is not None and never(rule.when)):
            by_priority.setdefault(rule.priority, []).append((path, rule, act))
    for group in by_priority.values():
        for index, (path, rule, act) in enumerate(group):
            first = next((g for g in group[:index] if _conflict(g[1], g[2], rule, act)), None)
            if first is not None:
                _report(report, (first[0], first[1], first[2]), (path, rule, act))


def _conflict(a: ast.Rule, act_a: ast.Action, b: ast.Rule, act_b: ast.Action) -> bool:
    return act_a.target != act_b.target and a.name != b.name and overlap(a.when, b.when) is True


def _report(report: Report, first: tuple[str, ast.Rule, ast.Action], second: tuple[str, ast.Rule, ast.Action]) -> None:
    path_a, a, act_a = first
    path_b, b, act_b = second
    report(
        path_b,
        act_b.pos,
        "error",
        "E111",
        f"rule '{b.name}' sets strategy {act_b.target}, but rule '{a.name}' ({path_a}:{a.pos.line}) sets "
        f"{act_a.target} at the same priority {b.priority}, and both can fire on one request",
        "give one of them a higher priority, or conditions that exclude each other",
    )
