"""AST → IR: what the rules engine runs, plus the vocabulary and weights the classifier reads.

The compiler is total: every well-formed AST compiles. Whether the result makes sense
(known plugins, satisfiable conditions, compiling regexes) is lint's job, so a rule author
gets every finding at once rather than the first exception.
"""

from __future__ import annotations

import re
from typing import Any

from . import ast, ir

DEFAULT_PREFER_WEIGHT = 10.0
HEALTH_STATES = ("up", "degraded", "down")
AVAILABILITY_STATES = ("available", "unavailable")
CIRCUIT_STATES = ("closed", "open", "half-open")


def split_regex(literal: str) -> tuple[str, str]:
    """``/body/flags`` → (body, flags); an escaped slash in the body becomes a plain slash."""
    end = literal.rfind("/")
    return literal[1:end].replace("\\/", "/"), literal[end + 1 :]


def value_of(value: ast.Value) -> Any:
    """A condition's literal; bare words are strings (``complexity == complex``)."""
    return value.value


def _atom(cond: ast.Cond) -> ir.Condition:
    op, a = cond.op, cond.args
    if op in ("domain", "context", "pattern", "fact"):
        return ir.Exists(f"{op}.{a[0]}")
    if op == "domain_score":
        return ir.Compare(f"domain.{a[0]}", a[1], a[2])
    if op == "fact_cmp":
        return ir.Compare(f"fact.{a[0]}", a[1], value_of(a[2]))
    if op == "text_matches":
        body, flags = split_regex(a[0])
        return ir.Matches("text", body, flags)
    if op == "text_contains":
        return ir.Matches("text", re.escape(a[0]), "i")
    if op == "file_matches":
        return ir.Glob("files", a[0])
    if op == "plugin_is":
        if a[1] in AVAILABILITY_STATES:
            return ir.Compare(f"plugin.{a[0]}.available", "==", a[1] == "available")
        return ir.Compare(f"plugin.{a[0]}.health", "==", a[1])
    if op == "circuit_is":
        return ir.Compare(f"plugin.{a[0]}.circuit", "==", a[1])
    if op == "caller_is":
        return ir.Compare("caller", "==", a[0])
    if op == "compare":
        return ir.Compare(a[0], a[1], value_of(a[2]))
    if op == "one_of":
        return ir.OneOf(a[0], tuple(value_of(v) for v in a[1]))
    if op == "contains":
        return ir.Contains(a[0], value_of(a[1]))
    raise ValueError(f"unknown condition {op}")


def condition(cond: ast.Cond | None) -> ir.Condition:
    if cond is None:
        return ir.All(())
    if cond.op == "and":
        return ir.All(tuple(condition(c) for c in cond.children))
    if cond.op == "or":
        return ir.Any_(tuple(condition(c) for c in cond.children))
    if cond.op == "not":
        return ir.Not(condition(cond.children[0]))
    return _atom(cond)


def action(act: ast.Action) -> ir.Action:
    weight = DEFAULT_PREFER_WEIGHT if act.weight is None else act.weight
    if act.op == "prefer":
        return ir.Prefer(act.target, weight)
    if act.op == "avoid":
        return ir.Prefer(act.target, -weight)
    if act.op == "require":
        return ir.Require(act.target)
    if act.op == "exclude":
        return ir.Exclude(act.target)
    if act.op == "collaborate":
        return ir.Collaborate(act.target, act.on, act.after, act.parallel)
    if act.op == "strategy":
        return ir.SetStrategy(act.target)
    if act.op == "assert":
        return ir.AssertFact(act.target, True if act.value is None else value_of(act.value))
    if act.op == "retract":
        return ir.RetractFact(act.target)
    raise ValueError(f"unknown action {act.op}")


def rule(node: ast.Rule, path: str) -> ir.Rule:
    return ir.Rule(
        name=node.name,
        when=condition(node.when),
        then=tuple(action(a) for a in node.then),
        priority=node.priority,
        reason=node.because or "",
        source=ir.Source(path, node.pos.line, node.pos.col),
    )


def vocabulary(modules: tuple[ast.Module, ...]) -> dict[str, Any]:
    """Domains and patterns as plain data for the classifier (later files extend earlier ones)."""
    domains: dict[str, dict[str, Any]] = {}
    patterns: dict[str, dict[str, Any]] = {}
    for module in modules:
        for decl in module.decls:
            if isinstance(decl, ast.Domain):
                entry = domains.setdefault(decl.name, {"keywords": [], "synonyms": {}, "globs": []})
                entry["keywords"].extend(decl.keywords)
                entry["synonyms"].update(dict(decl.synonyms))
                entry["globs"].extend(decl.files)
            elif isinstance(decl, ast.Pattern):
                entry = patterns.setdefault(decl.name, {"phrases": [], "regexes": []})
                entry["phrases"].extend(decl.phrases)
                entry["regexes"].extend(split_regex(r) for r in decl.regexes)
    return {"domains": domains, "patterns": patterns}


def capability_weights(modules: tuple[ast.Module, ...]) -> dict[str, dict[str, float]]:
    weights: dict[str, dict[str, float]] = {}
    for module in modules:
        for decl in module.decls:
            if isinstance(decl, ast.Capabilities):
                weights.setdefault(decl.plugin, {}).update(dict(decl.weights))
    return weights
