"""The decision stage alone: primary, fallbacks, collaboration plan, strategy, no-route."""

from __future__ import annotations

from arbiter.dsl import ir

from arbiter.project.model import Component, ErrorHandling, FallbackPolicy, Plugin, Routing
from arbiter.routing.decide import DecideSettings, RankedPlugin, RuleAsks, decide


def plugin(name, can=None, accepts=None, fallbacks=(), model="sonnet"):
    agent = Component("agent", "a", name, "x.md", model=model)
    return Plugin(
        name=name,
        path=name,
        kind="enhanced",
        routing=Routing(can_route_to=can, accepts_routing_from=accepts),
        error_handling=ErrorHandling(fallback=FallbackPolicy(plugins=tuple(fallbacks))),
        agents=(agent,),
    )


PLUGINS = {
    "backend": plugin("backend", can=("auth", "infra"), fallbacks=("coord",)),
    "auth": plugin("auth", accepts=("backend", "coord"), model="opus"),
    "infra": plugin("infra", accepts=("coord",)),
    "coord": plugin("coord"),
}


def ranked(*rows):
    return [RankedPlugin(p, s, tuple(d), e) for p, s, d, e in rows]


def test_single_domain_single_plugin():
    r = ranked(("backend", 90, ["backend", "api"], True), ("coord", 10, [], True))
    d = decide(r, ["backend", "api"], "simple", 600_000, True, RuleAsks(), PLUGINS)
    assert d.primary_plugin == "backend"
    assert d.collaboration_plan is None
    assert d.execution_strategy == "single_plugin"
    assert d.fallback_plugins == ("coord",)
    assert d.estimated_duration == 600_000
    assert d.estimated_cost == 0.05


def test_cross_domain_collaboration_after_primary_phase():
    r = ranked(
        ("backend", 95, ["backend", "database"], True), ("auth", 75, ["authentication"], True), ("coord", 0, [], True)
    )
    d = decide(r, ["backend", "database", "authentication"], "moderate", 1_800_000, True, RuleAsks(), PLUGINS)
    plan = d.collaboration_plan
    assert [(p.domain, p.plugin, p.dependencies) for p in plan.phases] == [
        ("backend", "backend", ()),
        ("authentication", "auth", ("backend",)),
    ]
    assert plan.coordinator == "jira-orchestrator"
    assert d.execution_strategy == "sequential_collaboration"
    assert d.estimated_duration == 2_700_000
    assert d.fallback_plugins[:2] == ("auth", "coord")


def test_acl_forbids_collaborator_and_says_so():
    r = ranked(("auth", 95, ["authentication"], True), ("infra", 80, ["infrastructure"], True))
    d = decide(r, ["authentication", "infrastructure"], "moderate", 1000, True, RuleAsks(), PLUGINS)
    assert d.collaboration_plan is None
    # infra's acceptsRoutingFrom refuses auth (auth itself may route anywhere): the note says so
    assert "infra covers infrastructure, but infra does not accept routing from auth" in " ".join(d.notes)
    assert "acceptsRoutingFrom of infra" in " ".join(d.notes)
    assert "may not route" not in " ".join(d.notes)


def test_rules_require_collaborate_and_strategy():
    asks = RuleAsks.from_actions(
        [
            ir.Require("auth"),
            ir.Collaborate("infra", domain="deployment", after=("authentication",), parallel=True),
            ir.SetStrategy("saga"),
        ]
    )
    r = ranked(("backend", 95, ["backend"], True), ("auth", 20, ["authentication"], True), ("infra", 5, [], True))
    d = decide(r, ["backend"], "simple", 1000, True, asks, PLUGINS)
    assert d.primary_plugin == "auth"  # required wins over a higher score
    assert d.execution_strategy == "saga"
    # infra does not accept routing from auth: the asked collaboration is skipped with a note
    assert any("infra" in n for n in d.notes)


def test_no_route_keeps_nearest_candidates():
    r = ranked(("backend", 3, [], True), ("auth", 1, [], True), ("infra", 0, [], True))
    d = decide(r, [], "simple", 1000, False, RuleAsks(), PLUGINS)
    assert d.primary_plugin is None
    assert d.candidates == ("backend", "auth")
    assert d.to_json()["nearestCandidates"] == ["backend", "auth"]


def test_ineligible_plugins_are_never_chosen():
    r = ranked(("backend", 95, ["backend"], False), ("coord", 40, ["backend"], True))
    d = decide(r, ["backend"], "simple", 1000, True, RuleAsks(), PLUGINS, DecideSettings(max_fallbacks=1))
    assert d.primary_plugin == "coord"
    assert "backend" not in d.fallback_plugins
