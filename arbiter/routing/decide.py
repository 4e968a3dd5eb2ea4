"""The decision: primary plugin, fallbacks, collaboration plan, strategy, cost and duration.

Input is the matcher's ranked scores plus what the rules asked for (required plugins,
collaborations, a strategy). The decision never forces a request onto a plugin that does not
fit: when the matcher says there is no route, the primary is ``None`` and the nearest
candidates are kept for the user to see.

Estimates follow the seed's shape with explicit, documented constants:
- duration: the classification's estimate for the primary phase, plus half of it for each
  sequential collaborating phase (parallel phases overlap the longest sequential one);
- cost: the model of :mod:`arbiter.routing.cost` — one agent task per phase, plus the
  coordinator's when there are several, on the model each plugin's agents mostly use (the
  pipeline restates it from the agents of the team it picks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from arbiter.dsl import ir
from arbiter.project.model import Plugin
from arbiter.routing import cost


@dataclass(frozen=True)
class Phase:
    domain: str
    plugin: str
    dependencies: tuple[str, ...] = ()
    parallel: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "plugin": self.plugin,
            "dependencies": list(self.dependencies),
            "parallel": self.parallel,
        }


@dataclass(frozen=True)
class CollaborationPlan:
    phases: tuple[Phase, ...]
    coordinator: str
    estimated_duration: int

    def to_json(self) -> dict[str, Any]:
        return {
            "phases": [p.to_json() for p in self.phases],
            "coordinator": self.coordinator,
            "estimatedDuration": self.estimated_duration,
        }


@dataclass(frozen=True)
class Decision:
    primary_plugin: str | None
    fallback_plugins: tuple[str, ...] = ()
    collaboration_plan: CollaborationPlan | None = None
    execution_strategy: str = "single_plugin"
    estimated_cost: float = 0.0
    estimated_duration: int = 0
    candidates: tuple[str, ...] = ()  # nearest plugins when there is no route
    notes: tuple[str, ...] = ()  # why something asked for was not done (ACLs, exclusions)
    unserved: tuple[str, ...] = ()  # plugins that fit better than the primary but no live worker serves

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "primaryPlugin": self.primary_plugin,
            "fallbackPlugins": list(self.fallback_plugins),
            "collaborationPlan": self.collaboration_plan.to_json() if self.collaboration_plan else None,
            "executionStrategy": self.execution_strategy,
            "estimatedCost": self.estimated_cost,
            "estimatedDuration": self.estimated_duration,
            "nearestCandidates": list(self.candidates),
            "notes": list(self.notes),
            "unservedPlugins": list(self.unserved),
        }
        return out


@dataclass(frozen=True)
class RankedPlugin:
    """What the decision needs of a matcher score."""

    plugin: str
    score: float
    domains: tuple[str, ...]  # domains this plugin matched, strongest first
    eligible: bool = True


@dataclass(frozen=True)
class RuleAsks:
    """The decision-level outcome of the rules: requirements, collaborations, strategy."""

    required: tuple[str, ...] = ()
    collaborations: tuple[ir.Collaborate, ...] = ()
    strategy: str | None = None

    @classmethod
    def from_actions(cls, actions: Iterable[ir.Action]) -> RuleAsks:
        required: list[str] = []
        collaborations: list[ir.Collaborate] = []
        strategy = None
        for action in actions:
            if isinstance(action, ir.Require) and action.plugin not in required:
                required.append(action.plugin)
            elif isinstance(action, ir.Collaborate):
                collaborations.append(action)
            elif isinstance(action, ir.SetStrategy):
                strategy = action.strategy
        return cls(tuple(required), tuple(collaborations), strategy)


@dataclass(frozen=True)
class DecideSettings:
    max_fallbacks: int = 3
    coordinator: str = "jira-orchestrator"
    fallback_ratio: float = 0.3  # a fallback scores at least this share of the primary


@dataclass
class _Plan:
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def has(self, plugin: str) -> bool:
        return any(p.plugin == plugin for p in self.phases)


def _refusal(plugins: Mapping[str, Plugin], source: str, target: str) -> str | None:
    """Why the manifests forbid ``source`` to hand work to ``target`` (None: allowed, or unknown)."""
    a, b = plugins.get(source), plugins.get(target)
    return a.route_refusal(b) if a is not None and b is not None else None


def _choose_primary(ranked: Sequence[RankedPlugin], asks: RuleAsks, routable: bool) -> tuple[str | None, list[str]]:
    eligible = {r.plugin for r in ranked if r.eligible}
    notes = [f"required plugin {p} is not available" for p in asks.required if p not in eligible]
    required = [r.plugin for r in ranked if r.eligible and r.plugin in asks.required]
    if required:
        return required[0], notes
    best = next((r for r in ranked if r.eligible), None)
    if routable and best is not None:
        return best.plugin, notes
    return None, notes


def _fallbacks(
    primary: str, ranked: Sequence[RankedPlugin], plugins: Mapping[str, Plugin], settings: DecideSettings
) -> tuple[str, ...]:
    eligible = [r for r in ranked if r.eligible and r.plugin != primary]
    top = next((r.score for r in ranked if r.plugin == primary), 0.0)
    strong = [r.plugin for r in eligible if r.score > 0 and r.score >= settings.fallback_ratio * top]
    declared = [p for p in plugins[primary].error_handling.fallback.plugins if p in plugins and p != primary]
    rest = [r.plugin for r in eligible if r.score > 0]
    ordered = list(dict.fromkeys(strong + declared + rest))
    usable = {r.plugin for r in eligible}
    return tuple(p for p in ordered if p in usable)[: settings.max_fallbacks]


def _primary_domain(primary: RankedPlugin | None, domains: Sequence[str]) -> str:
    if primary and primary.domains:
        for domain in domains:
            if domain in primary.domains:
                return domain
        return primary.domains[0]
    return domains[0] if domains else "general"


def _plan(
    primary: str,
    ranked: Sequence[RankedPlugin],
    domains: Sequence[str],
    asks: RuleAsks,
    plugins: Mapping[str, Plugin],
) -> _Plan:
    """Primary phase first; a phase per other plugin covering a domain the primary lacks; then
    the collaborations rules asked for (ACLs permitting)."""
    by_name = {r.plugin: r for r in ranked}
    lead = _primary_domain(by_name.get(primary), domains)
    plan = _Plan([Phase(lead, primary, (), False, "primary")])
    covered = set(by_name[primary].domains) if primary in by_name else set()
    for domain in domains:
        if domain in covered:
            continue
        owner = next((r for r in ranked if r.eligible and r.plugin != primary and domain in r.domains), None)
        if owner is None:
            continue
        covered.add(domain)
        if plan.has(owner.plugin):
            continue
        refusal = _refusal(plugins, primary, owner.plugin)
        if refusal:
            plan.notes.append(f"{owner.plugin} covers {domain}, but {refusal}")
            continue
        plan.phases.append(Phase(domain, owner.plugin, (lead,), False, f"covers {domain}"))
    for ask in asks.collaborations:
        _add_collaboration(plan, ask, primary, lead, by_name, plugins)
    for plugin in asks.required:
        if plugin != primary and plugin in by_name and by_name[plugin].eligible and not plan.has(plugin):
            domain = by_name[plugin].domains[0] if by_name[plugin].domains else plugin
            plan.phases.append(Phase(domain, plugin, (lead,), False, "required by a rule"))
    _drop_orphans(plan)
    return plan


def _add_collaboration(
    plan: _Plan,
    ask: ir.Collaborate,
    primary: str,
    lead: str,
    by_name: Mapping[str, RankedPlugin],
    plugins: Mapping[str, Plugin],
) -> None:
    ranked = by_name.get(ask.plugin)
    if ask.plugin == primary:
        plan.notes.append(f"collaboration with {ask.plugin} skipped: it is the primary plugin itself")
        return
    if ask.plugin not in plugins or ranked is None or not ranked.eligible:
        plan.notes.append(f"collaboration with {ask.plugin} skipped: not available")
        return
    refusal = _refusal(plugins, primary, ask.plugin)
    if refusal:
        plan.notes.append(f"collaboration with {ask.plugin} skipped: {refusal}")
        return
    domain = ask.domain or (ranked.domains[0] if ranked.domains else ask.plugin)
    phase = Phase(domain, ask.plugin, tuple(ask.after) or (lead,), ask.parallel, "asked for by a rule")
    plan.phases = [p for p in plan.phases if p.plugin != ask.plugin]
    plan.phases.append(phase)


def _drop_orphans(plan: _Plan) -> None:
    """Drop every phase that waits on a phase the plan does not have (one a refusal or an
    unavailable plugin dropped), and those waiting on it in turn: a plan never shows a step
    that cannot start."""
    while True:
        names = {p.domain for p in plan.phases} | {p.plugin for p in plan.phases}
        orphan = next((p for p in plan.phases if any(d not in names for d in p.dependencies)), None)
        if orphan is None:
            return
        missing = ", ".join(d for d in orphan.dependencies if d not in names)
        plan.notes.append(
            f"{orphan.plugin} ({orphan.domain}) dropped from the plan: it waits on {missing}, not in the plan"
        )
        plan.phases.remove(orphan)


def _strategy(plan: CollaborationPlan | None, asked: str | None) -> str:
    if asked:
        return asked
    if plan is None:
        return "single_plugin"
    others = plan.phases[1:]
    return "parallel_collaboration" if others and all(p.parallel for p in others) else "sequential_collaboration"


def _duration(base: int, phases: Sequence[Phase]) -> int:
    sequential = sum(1 for p in phases[1:] if not p.parallel)
    return int(base + base * 0.5 * sequential) if phases else base


def _cost(plugins: Mapping[str, Plugin], phases: Sequence[Phase], coordinator: str, complexity: str) -> float:
    working = cost.working_plugins([p.plugin for p in phases], coordinator)
    return cost.estimate([cost.usual_model(plugins.get(name)) for name in working], complexity)


def decide(
    ranked: Sequence[RankedPlugin],
    domains: Sequence[str],
    complexity: str,
    base_duration: int,
    routable: bool,
    asks: RuleAsks,
    plugins: Mapping[str, Plugin],
    settings: DecideSettings = DecideSettings(),
) -> Decision:
    """Make the decision from ranked plugins (best first) and the rules' asks."""
    primary, notes = _choose_primary(ranked, asks, routable)
    if primary is None:
        nearest = tuple(r.plugin for r in ranked if r.eligible and r.score > 0)[:3]
        return Decision(None, candidates=nearest, execution_strategy="none", notes=tuple(notes))
    plan = _plan(primary, ranked, domains, asks, plugins)
    notes.extend(plan.notes)
    collaboration = None
    duration = base_duration
    if len(plan.phases) > 1:
        duration = _duration(base_duration, plan.phases)
        collaboration = CollaborationPlan(tuple(plan.phases), settings.coordinator, duration)
    return Decision(
        primary_plugin=primary,
        fallback_plugins=_fallbacks(primary, ranked, plugins, settings),
        collaboration_plan=collaboration,
        execution_strategy=_strategy(collaboration, asks.strategy),
        estimated_cost=_cost(plugins, plan.phases, settings.coordinator, complexity),
        estimated_duration=duration,
        notes=tuple(notes),
    )
