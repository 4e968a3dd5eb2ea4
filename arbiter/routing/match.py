"""Stage 3 of the pipeline: every plugin's score for a request, with the reasons.

The seed's formula — 30 per matched domain, 20 per context, 15 per pattern, weighted by the
capability matrix, times priority/100, times availability — applies to plugins that declare
capabilities. Every plugin also earns points for text relevance (see
:mod:`arbiter.routing.text_index`), so plain plugins without capabilities are routable too, and
rules add their prefer/avoid weights.

A plugin that is down, whose circuit is open, that no live worker serves (in the broker), that a
rule excluded, or that the caller may not route to (``acceptsRoutingFrom`` / ``canRouteTo``) is
scored but not eligible, and says why (for the ACLs, which manifest refused:
:meth:`~arbiter.project.model.Plugin.route_refusal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from arbiter.dsl import ir
from arbiter.project.model import Plugin
from arbiter.routing.classify import Classification
from arbiter.routing.globs import matches_any

RELEVANCE_POINTS = 12.0  # points per unit of text relevance
# A request is routable when the best eligible plugin matched a declared domain or its text
# relevance, measured against how much the request says (its *fit*: relevance / sqrt(content),
# see classify.content_of), is at least this; below it the evidence is a common word or two, or
# only context, or a small part of a request about something else: better "no route" with
# candidates than a guess. Calibrated on the labelled corpus requests the router is developed
# on (bench/bench_accuracy.py), stated by explain.
MIN_FIT = 0.55
# Who leads: a plugin's relevance points are multiplied by ((1 + main) / (1 + relevance)) **
# LEAD_POWER, where ``main`` is the relevance its main-clause words earned. A plugin the request
# names only as context (where its input comes from, whose system it is) keeps its evidence but
# not the lead. Calibrated on the labelled requests the router is developed on
# (bench/bench_accuracy.py).
LEAD_POWER = 0.5


def lead_of(relevance: float, main: float) -> float:
    """The share of a plugin's text evidence that the main clause gave it, softened: 1 when all
    of it did, less the more of it came from context phrases."""
    return ((1.0 + main) / (1.0 + relevance)) ** LEAD_POWER if relevance > main else 1.0


def fit_of(relevance: float, content: float) -> float:
    """Relevance per square root of what the request says: a long request needs more evidence
    than a short one, but not in proportion (its extra words are often detail, not topic)."""
    return relevance / math.sqrt(max(content, 1.0))


@dataclass(frozen=True)
class Health:
    status: str = "up"  # up | degraded | down
    circuit: str = "closed"  # closed | open | half-open
    availability: float = 1.0
    latency_ms: float | None = None
    success_rate: float | None = None  # learned from the plugin's recent outcomes (None: none yet)
    served: bool = True  # a live worker serves it (as the broker sees it; outside one, assumed)

    @property
    def usable(self) -> bool:
        """Can a request be sent to it now?"""
        return self.status != "down" and self.circuit != "open" and self.served

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "circuit": self.circuit}
        if not self.served:
            out["served"] = False
        if self.latency_ms is not None:
            out["latency"] = self.latency_ms
        if self.success_rate is not None:
            out["successRate"] = self.success_rate
        return out


UP = Health()
RATE_STEP = 0.05  # learned success rates move routing in steps this big, not with every outcome


def step_rate(rate: float) -> float:
    """A learned success rate as routing uses it: down to a multiple of :data:`RATE_STEP`, so a
    rate that wobbles between two outcomes does not change decisions (or empty their cache)."""
    return round(int(rate / RATE_STEP + 1e-9) * RATE_STEP, 2)


def health_of(
    circuits: Mapping[str, str], rates: Mapping[str, float], unserved: Iterable[str] = ()
) -> dict[str, Health]:
    """Each plugin's health as routing reads it: its circuit (when not closed), its learned
    success rate (stepped; when it is below 1), and whether any live worker serves it (the
    broker names the plugins ``unserved`` that none does)."""
    unserved = frozenset(unserved)
    names = set(circuits) | unserved | {name for name, rate in rates.items() if step_rate(rate) < 1.0}
    return {
        name: Health(
            circuit=circuits.get(name, "closed"),
            success_rate=step_rate(rates[name]) if name in rates and step_rate(rates[name]) < 1.0 else None,
            served=name not in unserved,
        )
        for name in names
    }


@dataclass(frozen=True)
class Matched:
    type: str  # domain | context | pattern | file | relevance | rule
    value: str
    weight: float

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value, "weight": round(self.weight, 2)}


@dataclass(frozen=True)
class RuleEffects:
    """What the rules said about plugins: score adjustments, requirements, exclusions."""

    weights: Mapping[str, float] = field(default_factory=dict)
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()

    @classmethod
    def from_actions(cls, actions: Iterable[ir.Action]) -> RuleEffects:
        weights: dict[str, float] = {}
        required, excluded = set(), set()
        for action in actions:
            if isinstance(action, ir.Prefer):
                weights[action.plugin] = weights.get(action.plugin, 0.0) + action.weight
            elif isinstance(action, ir.Require):
                required.add(action.plugin)
            elif isinstance(action, ir.Exclude):
                excluded.add(action.plugin)
        return cls(weights, {}, frozenset(required), frozenset(excluded))


NO_EFFECTS = RuleEffects()


@dataclass(frozen=True)
class PluginScore:
    plugin: str
    score: float
    capabilities: tuple[Matched, ...]
    relevance: float
    evidence: tuple[str, ...]
    health: Health
    eligible: bool = True
    reason: str = ""
    fit: float = 0.0  # relevance measured against the request's content (:func:`fit_of`)
    lead: float = 1.0  # what context-only evidence costs it (:func:`lead_of`)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(m.value for m in self.capabilities if m.type == "domain")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "plugin": self.plugin,
            "score": round(self.score, 2),
            "capabilities": [m.to_json() for m in self.capabilities],
            "health": self.health.to_json(),
            "availability": self.health.availability,
            "relevance": round(self.relevance, 3),
            "fit": round(self.fit, 3),
            "lead": round(self.lead, 3),
            "evidence": list(self.evidence),
            "eligible": self.eligible,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Weights:
    domain: float = 30.0
    context: float = 20.0
    pattern: float = 15.0
    matrix: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def of(self, plugin: str, capability: str, base: float) -> float:
        return base * self.matrix.get(plugin, {}).get(capability, 1.0)


def _capabilities(plugin: Plugin, c: Classification, weights: Weights) -> list[Matched]:
    caps = plugin.capabilities
    found: list[Matched] = []
    for domain in c.domain_names:
        if domain in caps.domains:
            found.append(Matched("domain", domain, weights.of(plugin.name, domain, weights.domain)))
    declared_contexts = set(caps.contexts) | set(caps.integrations)
    for context in c.contexts:
        if context.name in declared_contexts:
            found.append(Matched("context", context.name, weights.of(plugin.name, context.name, weights.context)))
    for pattern in c.patterns:
        if pattern.name in caps.patterns:
            found.append(Matched("pattern", pattern.name, weights.of(plugin.name, pattern.name, weights.pattern)))
    globs = [g for g in plugin.routing.context_patterns if matches_any(g, c.files)] if c.files else []
    if globs:
        found.append(Matched("file", globs[0], weights.context))
    return found


NO_WORKER = "no live worker serves it"


def _eligibility(plugin: Plugin, health: Health, effects: RuleEffects, caller: Plugin | None) -> str:
    if health.status == "down":
        return "plugin is down"
    if health.circuit == "open":
        return "circuit breaker is open"
    if not health.served:
        return NO_WORKER
    if plugin.name in effects.excluded:
        return "excluded by a rule"
    return (caller.route_refusal(plugin) if caller is not None else None) or ""


def match(
    c: Classification,
    plugins: Mapping[str, Plugin],
    weights: Weights = Weights(),
    effects: RuleEffects = NO_EFFECTS,
    health: Mapping[str, Health] | None = None,
    caller: str | None = None,
) -> tuple[PluginScore, ...]:
    """Score every plugin; eligible plugins first, best score first."""
    health = health or {}
    relevance = {r.name: r for r in c.relevance}
    calling = plugins.get(caller) if caller else None
    scores = []
    for plugin in plugins.values():
        state = health.get(plugin.name, UP)
        matched = _capabilities(plugin, c, weights)
        rel = relevance.get(plugin.name)
        rel_score = rel.score if rel else 0.0
        lead = lead_of(rel_score, rel.main) if rel else 1.0
        if rel_score:
            matched.append(Matched("relevance", ", ".join(rel.evidence[:3]), RELEVANCE_POINTS * rel_score * lead))
        rule_weight = effects.weights.get(plugin.name, 0.0)
        if rule_weight:
            matched.append(Matched("rule", "prefer" if rule_weight > 0 else "avoid", rule_weight))
        raw = sum(m.weight for m in matched)
        score = max(raw, 0.0) * plugin.routing.priority / 100 * state.availability
        reason = _eligibility(plugin, state, effects, calling)
        scores.append(
            PluginScore(
                plugin.name,
                score,
                tuple(matched),
                rel_score,
                rel.evidence if rel else (),
                state,
                not reason,
                reason,
                fit_of(rel_score, c.content),
                lead,
            )
        )
    return tuple(sorted(scores, key=lambda s: (not s.eligible, -s.score, s.plugin)))


def routable(scores: Sequence[PluginScore], effects: RuleEffects = NO_EFFECTS) -> bool:
    """Is there a plugin that really fits? (Rules requiring a plugin always make it routable.)"""
    if effects.required:
        return True
    eligible = [s for s in scores if s.eligible and s.score > 0]
    if not eligible:
        return False
    best = eligible[0]
    if any(m.type in ("domain", "rule") and m.weight > 0 for m in best.capabilities):
        return True
    return best.fit >= MIN_FIT
