"""One request through the pipeline: classify → rules → match → decide (→ record, by the caller).

A :class:`Router` is built once per snapshot — text index, lexicon, agent registry, compiled
rules — and then routes any number of requests; each stage is a pure function over that
precomputed state and the request. The broker builds a new Router when it swaps snapshots, so
a request keeps the router (and snapshot) it started with.

Routing reads the first ``max_text_chars`` characters of a request (``configs/routing.yaml``):
the cut is made before classification, every later stage reads the classification, so the time
a decision takes does not grow with the length of the request.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from arbiter.project.snapshot import Snapshot
from arbiter.routing.action_view import action_json
from arbiter.routing.classify import Classification, bounded_text, build_classifier, classify
from arbiter.routing.decide import DecideSettings, Decision, Phase, RankedPlugin, RuleAsks, decide
from arbiter.routing.engine.engines import make_engine
from arbiter.routing.engine.semantics import EngineError, Evaluation
from arbiter.routing.match import MIN_FIT, NO_WORKER, Health, PluginScore, RuleEffects, Weights, match, routable
from arbiter.routing.surface import rewrite, rewrite_map, written_words
from arbiter.routing.team import AgentRegistry, AgentTeam, build_team
from arbiter.routing.text_index import normalize


def new_request_id() -> str:
    """``req_`` and 21 hex digits that sort by time (microseconds, then 32 bits from the PRNG):
    request ids are indexed in the decision log, where ordered keys append instead of
    scattering writes over the index."""
    return f"req_{time.time_ns() // 1000:013x}{random.getrandbits(32):08x}"


@dataclass(frozen=True)
class Request:
    text: str
    files: tuple[str, ...] = ()
    caller: str | None = None
    request_id: str = field(default_factory=new_request_id)


@dataclass(frozen=True)
class RoutingResult:
    request: Request
    classification: Classification
    evaluation: Evaluation | None
    rule_error: str | None
    scores: tuple[PluginScore, ...]
    decision: Decision
    team: AgentTeam
    timings_us: Mapping[str, float]
    rules_hash: str
    min_score: float = 0.0  # the floor a primary's score must reach (configs/routing.yaml min_score)

    def score_of(self, plugin: str) -> PluginScore | None:
        return next((s for s in self.scores if s.plugin == plugin), None)

    def collaborators(self) -> tuple[str, ...]:
        plan = self.decision.collaboration_plan
        return tuple(p.plugin for p in plan.phases[1:]) if plan else ()

    def trace(self) -> dict[str, Any]:
        fired = []
        for f in self.evaluation.firings if self.evaluation else ():
            fired.append(
                {
                    "rule": f.rule,
                    "priority": f.priority,
                    "source": f"{f.source.path}:{f.source.line}",
                    "reason": f.reason,
                    "actions": [action_json(a) for a in f.actions],
                    "facts": dict(f.facts),
                }
            )
        return {
            "engine": self.evaluation.engine if self.evaluation else None,
            "rulesFired": fired,
            "ruleError": self.rule_error,
            "facts": {k: v for k, v in self.classification.facts().items() if k != "text"},
        }

    def to_json(self, trace: bool = True) -> dict[str, Any]:
        """The explain JSON (``schemaVersion`` :data:`SCHEMA_VERSION`): every key always there,
        empty when there is nothing to say; evidence in the request's own words. Without
        ``trace`` (``arbiter route``), the same less ``trace``."""
        written = written_words(self.request.text, self.request.files)
        shown = [s for s in self.scores if s.score > 0 or not s.eligible][:10]
        out: dict[str, Any] = {
            "requestId": self.request.request_id,  # first: the broker's decision cache splices after it
            "schemaVersion": SCHEMA_VERSION,
            "userInput": self.request.text,
            "files": list(self.request.files),
            "caller": self.request.caller,
            "classification": _written_classification(self.classification.to_json(), written),
            "capabilityScores": [_written_score(s.to_json(), written) for s in shown],
            "routingDecision": self.decision.to_json(),
            "noRoute": self.no_route(),
            "agentTeam": self.team.to_json(),
            "rulesHash": self.rules_hash,
            "timings": {k: round(v, 1) for k, v in self.timings_us.items()},
        }
        if trace:
            out["trace"] = self.trace()
        return out

    def no_route(self) -> dict[str, Any] | None:
        """For a no-route answer: the thresholds applied and how far each near candidate is
        from them (None when there is a primary)."""
        if self.decision.primary_plugin is not None:
            return None
        near = [s for s in self.scores if s.plugin in self.decision.candidates]
        return {
            "thresholds": {"minFit": MIN_FIT, "minScore": self.min_score},
            "rule": "a plugin fits when it matched a declared domain or its text fit is minFit or more, "
            "and its score is minScore or more",
            "candidates": [_distance(s, self.min_score) for s in near],
        }


SCHEMA_VERSION = 2  # 2: typed rule actions, noRoute, every key always present


def _distance(s: PluginScore, min_score: float) -> dict[str, Any]:
    """A near candidate against the thresholds: what it has and how much it lacks."""
    return {
        "plugin": s.plugin,
        "score": round(s.score, 2),
        "fit": round(s.fit, 3),
        "relevance": round(s.relevance, 3),
        "matchedDomain": any(m.type == "domain" for m in s.capabilities),
        "fitShort": round(max(MIN_FIT - s.fit, 0.0), 3),
        "scoreShort": round(max(min_score - s.score, 0.0), 2),
    }


def _written_classification(data: dict[str, Any], written: Callable[[str], str]) -> dict[str, Any]:
    evidence = data["evidence"]
    for info in evidence["domains"].values():
        info["evidence"] = rewrite(info["evidence"], written)
    evidence["contexts"] = rewrite_map(evidence["contexts"], written)
    evidence["patterns"] = rewrite_map(evidence["patterns"], written)
    data.setdefault("textTruncated", None)
    return data


def _written_score(data: dict[str, Any], written: Callable[[str], str]) -> dict[str, Any]:
    data["evidence"] = rewrite(data["evidence"], written)
    for m in data["capabilities"]:
        if m["type"] == "relevance":
            m["value"] = ", ".join(rewrite(m["value"].split(", "), written))
    data.setdefault("reason", "")
    return data


def _weights(snapshot: Snapshot) -> Weights:
    routing = snapshot.configs["routing"]
    matrix: dict[str, dict[str, float]] = {p: dict(w) for p, w in snapshot.rules.capability_weights.items()}
    for plugin, caps in routing.get("capability_matrix", {}).items():
        matrix.setdefault(plugin, {}).update(caps)
    w = routing["weights"]
    return Weights(w["domain"], w["context"], w["pattern"], matrix)


class Router:
    """Routes requests over one snapshot. Thread-safe: all state is read-only after build."""

    def __init__(self, snapshot: Snapshot, engine: str | None = None):
        self.snapshot = snapshot
        plugins = list(snapshot.plugins.values())
        self.classifier = build_classifier(plugins, snapshot.rules.vocabulary)
        self.registry = AgentRegistry.build(plugins, normalize)
        self.engine = make_engine(engine or snapshot.configs["routing"]["engine"])
        self.compiled = self.engine.compile(snapshot.rules.ruleset)
        self.weights = _weights(snapshot)
        routing = snapshot.configs["routing"]
        self.settings = DecideSettings(max_fallbacks=routing["max_fallbacks"], coordinator=routing["coordinator"])
        self.min_score = float(routing["min_score"])
        self.max_text_chars = int(routing["max_text_chars"])

    def close(self) -> None:
        self.engine.release(self.compiled)

    def plugin_facts(self, health: Mapping[str, Health]) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        for name in self.snapshot.plugins:
            state = health.get(name, Health())
            facts[f"plugin.{name}.health"] = state.status
            facts[f"plugin.{name}.circuit"] = state.circuit
            facts[f"plugin.{name}.available"] = state.usable
        return facts

    def _rules(self, facts: Mapping[str, Any]) -> tuple[Evaluation | None, str | None]:
        try:
            return self.engine.evaluate(self.compiled, facts), None
        except EngineError as exc:  # a broken rule set must not lose the request: route without it
            return None, str(exc)

    def route(self, request: Request, health: Mapping[str, Health] | None = None) -> RoutingResult:
        health = health or {}
        t0 = time.perf_counter()
        read = bounded_text(request.text, self.max_text_chars)
        c = classify(read, request.files, self.classifier, request.caller, len(request.text))
        t1 = time.perf_counter()
        evaluation, rule_error = self._rules({**c.facts(), **self.plugin_facts(health)})
        actions = evaluation.actions if evaluation else ()
        t2 = time.perf_counter()
        effects = RuleEffects.from_actions(actions)
        scores = match(c, self.snapshot.plugins, self.weights, effects, health, request.caller)
        t3 = time.perf_counter()
        ranked = [RankedPlugin(s.plugin, s.score, s.domains, s.eligible) for s in scores]
        fits = routable(scores, effects) and (not scores or scores[0].score >= self.min_score)
        decision = decide(
            ranked,
            c.domain_names,
            c.complexity,
            c.estimated_duration,
            fits,
            RuleAsks.from_actions(actions),
            self.snapshot.plugins,
            self.settings,
        )
        team = self._team(c, decision, health)
        decision = replace(decision, estimated_cost=team.total_cost)  # one cost: the team's (see cost.py)
        unserved = self._unserved(scores, decision.primary_plugin, effects)
        if unserved:
            said = tuple(f"{name} fits this request better, but no live worker serves it" for name in unserved)
            decision = replace(decision, unserved=unserved, notes=decision.notes + said)
        t4 = time.perf_counter()
        timings = {
            "classifyUs": (t1 - t0) * 1e6,
            "rulesUs": (t2 - t1) * 1e6,
            "matchUs": (t3 - t2) * 1e6,
            "decideUs": (t4 - t3) * 1e6,
            "totalUs": (t4 - t0) * 1e6,
        }
        return RoutingResult(
            request,
            c,
            evaluation,
            rule_error,
            scores,
            decision,
            team,
            timings,
            self.snapshot.rules.hash,
            self.min_score,
        )

    def _unserved(self, scores: Sequence[PluginScore], primary: str | None, effects: RuleEffects) -> tuple[str, ...]:
        """The plugins that would have led but that no live worker serves (at most three), best
        first: ahead of the primary, or, with no primary, good enough to have been routed to."""
        best = next((s.score for s in scores if s.plugin == primary), 0.0)
        ahead = [s for s in scores if s.reason == NO_WORKER and s.score > best]
        if primary is None:
            ahead = [
                s
                for s in ahead
                if s.score >= self.min_score and routable([replace(s, eligible=True, reason="")], effects)
            ]
        return tuple(s.plugin for s in ahead[:3])

    def _team(self, c: Classification, decision: Decision, health: Mapping[str, Health]) -> AgentTeam:
        if decision.primary_plugin is None:
            return AgentTeam(None, (), 0.0)
        plan = decision.collaboration_plan
        phases: Sequence[Phase] = (
            plan.phases
            if plan
            else (Phase(c.domain_names[0] if c.domain_names else "general", decision.primary_plugin),)
        )
        capabilities = list(c.domain_names) + [x.name for x in c.contexts]
        rates = {name: h.success_rate for name, h in health.items() if h.success_rate is not None}
        return build_team(
            self.registry, phases, c.terms, capabilities, c.files, self.settings.coordinator, c.complexity, rates
        )

    def why_not(self, result: RoutingResult, plugin: str) -> list[str]:
        """Plain sentences on what kept ``plugin`` from winning."""
        if plugin not in self.snapshot.plugins:
            return [f"there is no plugin named {plugin}"]
        score = result.score_of(plugin)
        primary = result.decision.primary_plugin
        if plugin == primary:
            return [f"{plugin} is the primary plugin"]
        lines = []
        if score is not None and not score.eligible:
            lines.append(f"{plugin} was not eligible: {score.reason}")
        fired = result.evaluation.firings if result.evaluation else ()
        for f in fired:
            for action in f.actions:
                target = getattr(action, "plugin", None)
                if (
                    target == plugin
                    and type(action).__name__ in ("Exclude", "Prefer")
                    and (type(action).__name__ == "Exclude" or getattr(action, "weight", 0) < 0)
                ):
                    lines.append(f"rule {f.rule} ({f.source.path}:{f.source.line}) worked against it: {f.reason}")
        best = result.score_of(primary) if primary else None
        if score is not None and best is not None:
            lines.append(f"it scored {score.score:.1f}; {primary} scored {best.score:.1f}")
            mine = {(m.type, m.value) for m in score.capabilities}
            missing = [
                m
                for m in best.capabilities
                if (m.type, m.value) not in mine and m.type in ("domain", "context", "pattern")
            ]
            if missing:
                lines.append("it lacks: " + ", ".join(f"{m.type} {m.value}" for m in missing))
        if primary is None and score is not None:
            lines.append(f"no plugin fitted well enough; {plugin} had relevance {score.relevance:.2f}")
        declared = self.snapshot.plugins[plugin].capabilities.domains
        wanted = [d for d in result.classification.domain_names if d not in declared]
        if declared and wanted:
            lines.append("its manifest does not declare the domains: " + ", ".join(wanted))
        return lines or [f"{plugin} had no evidence in this request"]
