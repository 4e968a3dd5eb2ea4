"""When can a rule's condition hold? Lint's reasoning about conditions, apart from its reports.

Conditions are brought to disjunctive normal form (capped, since it can grow exponentially);
a rule can never fire when every conjunct contradicts itself, and rule A shadows rule B when A
holds whenever B does (each conjunct of B contains a conjunct of A).
"""

from __future__ import annotations

from typing import Any

from . import ast, compiler, ir

Literal = tuple[bool, ast.Cond]  # (positive, atom)
MAX_CONJUNCTS = 256


def dnf(cond: ast.Cond, positive: bool = True) -> list[list[Literal]] | None:
    """Disjunctive normal form as lists of literals; None when it would grow too large."""
    if cond.op == "not":
        return dnf(cond.children[0], not positive)
    if cond.op in ("and", "or"):
        conj = (cond.op == "and") == positive
        parts = [dnf(c, positive) for c in cond.children]
        if any(p is None for p in parts):
            return None
        if not conj:
            return [c for p in parts for c in p]  # type: ignore[union-attr]
        result: list[list[Literal]] = [[]]
        for p in parts:
            result = [a + b for a in result for b in p]  # type: ignore[union-attr]
            if len(result) > MAX_CONJUNCTS:
                return None
        return result
    return [[(positive, cond)]]


def _key(atom: ast.Cond) -> tuple[str, Any]:
    """The fact an atom tests, and a comparable form of what it requires."""
    ir_cond = compiler.condition(atom)
    return getattr(ir_cond, "fact", ""), ir_cond


def contradicts(conjunct: list[Literal]) -> bool:
    positives: dict[str, list[Any]] = {}
    for positive, atom in conjunct:
        fact, cond = _key(atom)
        if (not positive, atom.op, atom.args) in {(p, a.op, a.args) for p, a in conjunct}:
            return True
        if positive:
            positives.setdefault(fact, []).append(cond)
    for conds in positives.values():
        equal = {c.value for c in conds if isinstance(c, ir.Compare) and c.op == "=="}
        if len(equal) > 1 or _excluded(equal, conds):
            return True
        low, high = float("-inf"), float("inf")
        for c in conds:
            if isinstance(c, ir.Compare) and isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
                if c.op in (">", ">="):
                    low = max(low, c.value + (1e-9 if c.op == ">" else 0))
                elif c.op in ("<", "<="):
                    high = min(high, c.value - (1e-9 if c.op == "<" else 0))
                elif c.op == "==":
                    low, high = max(low, c.value), min(high, c.value)
        if low > high:
            return True
    return False


def _excluded(equal: set[Any], conds: list[Any]) -> bool:
    """``x == v`` beside ``x != v``, or beside ``x in [...]`` without v."""
    for value in equal:
        for c in conds:
            if isinstance(c, ir.Compare) and c.op == "!=" and c.value == value:
                return True
            if isinstance(c, ir.OneOf) and value not in c.values:
                return True
    return False


def never(cond: ast.Cond) -> bool:
    """Can the condition never hold? (Every conjunct of its normal form contradicts itself.)"""
    conjuncts = dnf(cond)
    return conjuncts is not None and bool(conjuncts) and all(contradicts(c) for c in conjuncts)


def literal_sets(cond: ast.Cond) -> list[frozenset[tuple[bool, str, tuple]]] | None:
    """The normal form as hashable sets of literals (one per conjunct), for comparing rules."""
    conjuncts = dnf(cond)
    if conjuncts is None:
        return None
    return [frozenset((p, a.op, _hashable(a.args)) for p, a in conj) for conj in conjuncts]


def _hashable(args: tuple) -> tuple:
    return tuple(repr(a) if not isinstance(a, (str, int, float, bool)) else a for a in args)


def weaker(sa: list[frozenset], sb: list[frozenset]) -> bool:
    """Does ``a`` hold whenever ``b`` does? (Each conjunct of b contains some conjunct of a.)"""
    return all(any(ca <= cb for ca in sa) for cb in sb)


def conflicts_or_repeats(a: ast.Rule, b: ast.Rule) -> bool:
    """Does rule ``a`` repeat ``b``'s actions, or exclude a plugin ``b`` picks?"""
    strip = [(x.op, x.target, x.weight, x.on, x.after) for x in b.then]
    if strip == [(x.op, x.target, x.weight, x.on, x.after) for x in a.then]:
        return True
    excluded = {x.target for x in a.then if x.op == "exclude"}
    return any(x.op in ("prefer", "require", "collaborate") and x.target in excluded for x in b.then)


def overlap(a: ast.Cond | None, b: ast.Cond | None) -> bool | None:
    """Can both conditions hold on one request? None when the normal forms grow too large to tell.

    Two rules whose conditions exclude each other (``caller is x`` and ``caller is y``) never
    fire together, so they cannot disagree.
    """
    conj_a = dnf(a) if a is not None else [[]]
    conj_b = dnf(b) if b is not None else [[]]
    if conj_a is None or conj_b is None or len(conj_a) * len(conj_b) > MAX_CONJUNCTS:
        return None
    return any(not contradicts(ca + cb) for ca in conj_a for cb in conj_b)
