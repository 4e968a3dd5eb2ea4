"""The unified agent registry and the agent team for a decision (the seed's findAgents).

Scoring follows the seed — category 40, each matching capability 20, each matching activation
keyword 10, each matching context pattern 15, available 10, times the success rate — with one
addition that plain plugins need: agents of plain Claude Code plugins declare no capabilities
and generic tags, so words of the agent's name and description count too (5 each), weighted by
how rare the word is among agents, so "agent" or "code" do not pick a team.

Text is normalized by the same function the classifier uses, passed in by the pipeline, so a
word form that routes a request also picks its agents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from arbiter.project.model import Component, Plugin
from arbiter.routing import cost
from arbiter.routing.decide import Phase
from arbiter.routing.globs import matches_any

Normalizer = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class AgentEntry:
    id: str
    name: str
    plugin: str
    category: str | None
    capabilities: frozenset[str]
    keywords: frozenset[str]  # normalized activation keywords and tags
    words: frozenset[str]  # normalized words of name and description
    context_patterns: tuple[str, ...]
    model: str
    description: str
    success_rate: float = 1.0
    status: str = "available"


@dataclass(frozen=True)
class AgentMatch:
    agent: AgentEntry
    score: float
    matched: tuple[str, ...]
    success_rate: float = 1.0  # what the score was multiplied by: the plugin's learned rate, or 1

    def to_json(self, role: str) -> dict[str, Any]:
        return {
            "role": role,
            "id": self.agent.id,
            "agent": self.agent.name,
            "plugin": self.agent.plugin,
            "model": self.agent.model,
            "score": round(self.score, 2),
            "matched": list(self.matched),
            "successRate": self.success_rate,
        }


@dataclass(frozen=True)
class AgentTeam:
    coordinator: AgentMatch | None
    specialists: tuple[tuple[str, AgentMatch], ...]  # (domain, agent)
    total_cost: float

    def to_json(self) -> dict[str, Any]:
        return {
            "coordinator": self.coordinator.to_json("coordinator") if self.coordinator else None,
            "specialists": [dict(m.to_json("specialist"), domain=d) for d, m in self.specialists],
            "totalCost": round(self.total_cost, 4),
        }


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def _entry(agent: Component, normalize: Normalizer) -> AgentEntry:
    caps = {c.lower() for c in _strings(agent.meta.get("capabilities"))}
    keywords = {t for k in agent.keywords for t in normalize(k)}
    words = set(normalize(agent.name.replace("-", " "))) | set(normalize(agent.description))
    return AgentEntry(
        id=agent.id,
        name=agent.name,
        plugin=agent.plugin,
        category=(agent.category or "").lower() or None,
        capabilities=frozenset(caps),
        keywords=frozenset(keywords),
        words=frozenset(words),
        context_patterns=tuple(_strings(agent.meta.get("contextPatterns"))),
        model=(agent.model or cost.DEFAULT_MODEL).lower(),
        description=agent.description,
    )


@dataclass(frozen=True)
class AgentRegistry:
    """Every agent of a snapshot, indexed once; ``find`` ranks them for a request."""

    agents: tuple[AgentEntry, ...]
    rarity: Mapping[str, float]  # word -> weight in (0, 1], rare words near 1
    usual_models: Mapping[str, str] = field(default_factory=dict)  # plugin -> model most agents use

    @classmethod
    def build(cls, plugins: Iterable[Plugin], normalize: Normalizer) -> AgentRegistry:
        plugins = list(plugins)
        entries = tuple(_entry(a, normalize) for p in plugins for a in p.agents)
        df: dict[str, int] = {}
        for e in entries:
            for w in e.words | e.keywords:
                df[w] = df.get(w, 0) + 1
        n = max(len(entries), 1)
        rarity = {w: min(1.0, math.log(1 + n / c) / math.log(1 + n)) for w, c in df.items()}
        return cls(entries, rarity, {p.name: cost.usual_model(p) for p in plugins})

    def model_of(self, match: AgentMatch | None, plugin: str) -> str:
        """The model a team slot runs on: its agent's, or its plugin's usual one when no agent fits."""
        return match.agent.model if match else self.usual_models.get(plugin, cost.DEFAULT_MODEL)

    def score(
        self,
        agent: AgentEntry,
        terms: Collection[str],
        capabilities: Collection[str],
        files: Sequence[str],
        category: str | None = None,
        rates: Mapping[str, float] | None = None,
    ) -> AgentMatch:
        """The seed's formula: evidence, a bonus for an available agent, times the success rate —
        the plugin's, learned from what its workers did (``rates``), else the agent's own."""
        score, matched = 0.0, []
        term_set = terms if isinstance(terms, (set, frozenset)) else set(terms)
        if category and agent.category == category:
            score += 40
            matched.append(f"category:{category}")
        for cap in sorted(agent.capabilities & set(capabilities)):
            score += 20
            matched.append(f"capability:{cap}")
        for word in sorted(agent.keywords & term_set):
            score += 10 * self.rarity.get(word, 1.0)
            matched.append(f"keyword:{word}")
        for word in sorted((agent.words - agent.keywords) & term_set):
            score += 5 * self.rarity.get(word, 1.0)
            matched.append(f"word:{word}")
        for pattern in agent.context_patterns if files else ():
            if matches_any(pattern, files):
                score += 15
                matched.append(f"file:{pattern}")
        relevant = score > 0
        if agent.status == "available" and relevant:
            score += 10
        rate = (rates or {}).get(agent.plugin, agent.success_rate)
        return AgentMatch(agent, score * rate, tuple(matched), rate)

    def find(
        self,
        terms: Collection[str],
        capabilities: Collection[str] = (),
        files: Sequence[str] = (),
        plugin: str | None = None,
        category: str | None = None,
        rates: Mapping[str, float] | None = None,
    ) -> list[AgentMatch]:
        """Agents ranked for the request, best first; agents with no evidence are left out. The
        request's terms become a set once, not once per agent."""
        pool = [a for a in self.agents if plugin is None or a.plugin == plugin]
        term_set = frozenset(terms)
        found = [self.score(a, term_set, capabilities, files, category, rates) for a in pool]
        return sorted((m for m in found if m.score > 0), key=lambda m: (-m.score, m.agent.id))


def build_team(
    registry: AgentRegistry,
    phases: Sequence[Phase],
    terms: Collection[str],
    capabilities: Collection[str],
    files: Sequence[str],
    coordinator_plugin: str,
    complexity: str,
    rates: Mapping[str, float] | None = None,
) -> AgentTeam:
    """A coordinator (the coordinator plugin's orchestration agent) when there is more than one
    phase, and one specialist per phase; its cost follows :mod:`arbiter.routing.cost`."""
    coordinator = None
    if len(phases) > 1:
        ranked = registry.find(terms, capabilities, files, coordinator_plugin, category="orchestration", rates=rates)
        coordinator = ranked[0] if ranked else None
    specialists: list[tuple[str, AgentMatch]] = []
    models = [registry.model_of(coordinator, coordinator_plugin)] if len(phases) > 1 else []
    for phase in phases:
        wanted = set(capabilities) | {phase.domain}
        ranked = registry.find(terms, wanted, files, phase.plugin, rates=rates)
        if coordinator is not None:
            ranked = [m for m in ranked if m.agent.id != coordinator.agent.id]
        if ranked:
            specialists.append((phase.domain, ranked[0]))
        models.append(registry.model_of(ranked[0] if ranked else None, phase.plugin))
    return AgentTeam(coordinator, tuple(specialists), cost.estimate(models, complexity))
