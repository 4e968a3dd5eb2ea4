"""Running routing test cases: the health a case routes under, what its decision showed, each
assertion's verdict, the ``-k`` filter, and which rules no case fires (``--coverage``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from arbiter.dsl import ir
from arbiter.routing.cases import Case
from arbiter.routing.match import Health, health_of
from arbiter.routing.pipeline import RoutingResult


@dataclass(frozen=True)
class Observed:
    """What a case can assert about, read off a routing result."""

    primary: str | None
    fallbacks: tuple[str, ...] = ()
    collaborators: tuple[str, ...] = ()
    strategy: str = "single_plugin"
    fired: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: RoutingResult) -> Observed:
        firings = result.evaluation.firings if result.evaluation else ()
        excluded = [a.plugin for f in firings for a in f.actions if isinstance(a, ir.Exclude)]
        d = result.decision
        return cls(
            d.primary_plugin,
            tuple(d.fallback_plugins),
            result.collaborators(),
            d.execution_strategy,
            tuple(f.rule for f in firings),
            tuple(dict.fromkeys(excluded)),
        )


@dataclass(frozen=True)
class Outcome:
    """A case's verdict: every failed assertion, as "expected ..., got ..." lines."""

    case: Case
    observed: Observed
    failures: tuple[str, ...] = ()
    result: Any = field(default=None, compare=False)  # the RoutingResult, for the explain diff

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def primary(self) -> str | None:
        return self.observed.primary

    @property
    def message(self) -> str:
        return "; ".join(self.failures)


def case_health(case: Case, base: Mapping[str, Health]) -> dict[str, Health]:
    """The health a case routes under: the base (the broker's recorded circuits), with the
    case's own circuit states and unserved plugins over it."""
    health = dict(base)
    for name, state in health_of(dict(case.circuits), {}, case.unserved).items():
        rate = base[name].success_rate if name in base else None
        health[name] = Health(circuit=state.circuit, served=state.served, success_rate=rate)
    return health


def _names(names: Iterable[str]) -> str:
    return ", ".join(names) or "(none)"


def _primary_failure(case: Case, seen: Observed) -> list[str]:
    if not case.checks_primary:
        return []
    if seen.primary == case.expect or (seen.primary is not None and seen.primary in case.also):
        return []
    wanted = case.expect or "no route"
    if case.also:
        wanted += f" (or {', '.join(case.also)})"
    return [f"primary: expected {wanted}, got {seen.primary or 'no route'}"]


def _fallback_failures(case: Case, seen: Observed) -> list[str]:
    out = []
    if case.fallbacks is not None and tuple(case.fallbacks) != seen.fallbacks:
        out.append(f"fallbacks: expected [{_names(case.fallbacks)}], got [{_names(seen.fallbacks)}]")
    missing = [p for p in case.fallbacks_include if p not in seen.fallbacks]
    if missing:
        out.append(f"fallbacks: expected to include {_names(missing)}, got [{_names(seen.fallbacks)}]")
    return out


def judge(case: Case, seen: Observed, result: Any = None) -> Outcome:
    """Check every assertion of ``case`` against what routing showed."""
    failures = _primary_failure(case, seen)
    missing = [c for c in case.collaborators if c not in seen.collaborators]
    if missing:
        failures.append(f"collaborators: expected {_names(missing)}, got [{_names(seen.collaborators)}]")
    not_fired = [r for r in case.fired if r not in seen.fired]
    if not_fired:
        failures.append(f"fired: expected {_names(not_fired)} to fire, fired [{_names(seen.fired)}]")
    fired = [r for r in case.not_fired if r in seen.fired]
    if fired:
        failures.append(f"not_fired: expected {_names(fired)} not to fire, but it did")
    if case.strategy is not None and case.strategy != seen.strategy:
        failures.append(f"strategy: expected {case.strategy}, got {seen.strategy}")
    failures.extend(_fallback_failures(case, seen))
    kept = [p for p in case.excluded if p not in seen.excluded]
    if kept:
        failures.append(f"excluded: expected a rule to exclude {_names(kept)}, excluded [{_names(seen.excluded)}]")
    return Outcome(case, seen, tuple(failures), result)


RouteFn = Callable[[Case], RoutingResult]


def run_cases(cases: Iterable[Case], route: RouteFn) -> list[Outcome]:
    outcomes = []
    for case in cases:
        result = route(case)
        outcomes.append(judge(case, Observed.of(result), result))
    return outcomes


_WORD = re.compile(r"\(|\)|[^\s()]+")


def selects(pattern: str) -> Callable[[Case], bool]:
    """The ``-k`` filter, as pytest's for plain words: a case is kept when PATTERN is a
    substring of its name or text (case-insensitive); words combine with ``and``, ``or``,
    ``not`` and parentheses (``-k "keycloak and not realm"``)."""
    tokens = _WORD.findall(pattern)
    if not any(t in ("and", "or", "not", "(", ")") for t in tokens):
        return lambda case: pattern.lower() in f"{case.name}\n{case.text}".lower()

    def keep(case: Case) -> bool:
        haystack = f"{case.name}\n{case.text}".lower()
        parts = [t if t in ("and", "or", "not", "(", ")") else str(t.lower() in haystack) for t in tokens]
        return bool(eval(" ".join(parts), {"__builtins__": {}}, {}))  # noqa: S307 (only True/False/and/or/not)

    keep(Case("", "", None))  # a malformed expression fails here, once, not per case
    return keep


def uncovered(rules: Sequence[ir.Rule], outcomes: Iterable[Outcome]) -> list[ir.Rule]:
    """The rules no case fired, in source order: routes no test holds in place."""
    fired = {name for o in outcomes for name in o.observed.fired}
    return [r for r in rules if r.name not in fired]
