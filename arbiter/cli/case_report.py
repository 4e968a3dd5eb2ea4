"""How ``arbiter test`` reports: a failing case with the explain of why, the rules no case
fires, and the same in JSON."""

from __future__ import annotations

from typing import Any, Sequence

import click

from arbiter.dsl import ir
from arbiter.routing.case_runs import Outcome
from arbiter.routing.explain import compact_json, compact_lines


def _expected(outcome: Outcome) -> dict[str, Any]:
    """Every assertion the case makes, under its case-file key."""
    case = outcome.case
    out: dict[str, Any] = {}
    if case.checks_primary:
        out["primary"] = case.expect
        if case.also:
            out["also"] = list(case.also)
    for key, value in (
        ("collaborators", case.collaborators),
        ("fired", case.fired),
        ("not_fired", case.not_fired),
        ("excluded", case.excluded),
    ):
        if value:
            out[key] = list(value)
    if case.strategy is not None:
        out["strategy"] = case.strategy
    if case.fallbacks is not None:
        out["fallbacks"] = list(case.fallbacks)
    if case.fallbacks_include:
        out["fallbacks"] = {"includes": list(case.fallbacks_include)}
    return out


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    seen, case = outcome.observed, outcome.case
    return {
        "name": case.name,
        "file": case.where,
        "passed": outcome.passed,
        "expected": case.expect,
        "got": seen.primary,
        "message": outcome.message,
        "failures": list(outcome.failures),
        "assertions": _expected(outcome),
        "conditions": {
            "from": case.caller,
            "files": list(case.files),
            "unserved": list(case.unserved),
            "circuits": dict(case.circuits),
        },
        "observed": {
            "primary": seen.primary,
            "fallbacks": list(seen.fallbacks),
            "collaborators": list(seen.collaborators),
            "strategy": seen.strategy,
            "fired": list(seen.fired),
            "excluded": list(seen.excluded),
        },
        "explain": compact_json(outcome.result) if outcome.result is not None and not outcome.passed else None,
    }


def rule_json(rule: ir.Rule) -> dict[str, Any]:
    return {"rule": rule.name, "source": f"{rule.source.path}:{rule.source.line}"}


def report_json(
    outcomes: Sequence[Outcome], circuits: dict, uncovered: Sequence[ir.Rule] | None, selected: int, total: int
) -> dict[str, Any]:
    failed = sum(1 for o in outcomes if not o.passed)
    return {
        "passed": len(outcomes) - failed,
        "failed": failed,
        "selected": selected,
        "deselected": total - selected,
        "circuits": circuits,
        "cases": [outcome_json(o) for o in outcomes],
        "uncoveredRules": None if uncovered is None else [rule_json(r) for r in uncovered],
    }


def echo_outcomes(outcomes: Sequence[Outcome], verbose: bool) -> None:
    """FAIL lines with each failed assertion and the explain that made the decision."""
    for o in outcomes:
        if o.passed and not verbose:
            continue
        click.echo(f"{'PASS' if o.passed else 'FAIL'}  {o.case.where}  {o.case.name[:60]}")
        for failure in o.failures:
            click.echo(f"      {failure}")
        if not o.passed and o.result is not None:
            click.echo("      why:")
            for line in compact_lines(o.result):
                click.echo(f"        {line}")


def echo_coverage(uncovered: Sequence[ir.Rule], total: int) -> None:
    click.echo(f"\nCoverage: {total - len(uncovered)}/{total} rules fired by some case")
    for rule in uncovered:
        click.echo(f"  not fired  {rule.source.path}:{rule.source.line}  {rule.name}")
