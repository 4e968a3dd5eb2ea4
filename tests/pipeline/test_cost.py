"""One cost model: the decision's estimate and the agent team's cost are the same number."""

from __future__ import annotations

import pytest

from arbiter.project.model import Component, Plugin
from arbiter.routing import cost
from arbiter.routing.decide import DecideSettings, Phase, RankedPlugin, RuleAsks, decide
from arbiter.routing.pipeline import Request
from arbiter.routing.team import AgentRegistry, build_team
from arbiter.routing.text_index import normalize

APPENDIX_A = "Build a FastAPI endpoint with MongoDB and Keycloak auth"


def test_appendix_a_decision_and_team_state_one_cost(shipped_router):
    result = shipped_router.route(Request(APPENDIX_A))
    data = result.to_json()
    team = data["agentTeam"]
    models = [team["coordinator"]["model"]] + [s["model"] for s in team["specialists"]]
    assert models == ["opus", "opus", "opus"]
    assert data["classification"]["complexity"] == "moderate"
    # coordinator + one specialist per phase, 0.10 each on opus, x1.5 for a moderate request
    assert data["routingDecision"]["estimatedCost"] == team["totalCost"] == 0.45


@pytest.mark.parametrize(
    "text",
    [
        "create a keycloak realm for tenant acme",
        "write a Home Assistant automation for the porch lights at sunset",
        "onboard a new tenant acme with keycloak and provision resources",
    ],
)
def test_decision_and_team_agree_on_other_requests(shipped_router, text):
    result = shipped_router.route(Request(text))
    assert result.decision.estimated_cost == round(result.team.total_cost, 4)


def _plugin(name: str, *models: str) -> Plugin:
    agents = tuple(Component("agent", f"{name}-{i}", name, "a.md", model=m) for i, m in enumerate(models))
    return Plugin(name=name, path=name, kind="enhanced", agents=agents)


def test_formula_and_usual_model():
    assert cost.estimate(["opus", "sonnet", "haiku"], "complex") == round((0.10 + 0.05 + 0.01) * 2.5, 4)
    assert cost.task_cost("unknown-model", "unknown-complexity") == 0.05 * 1.5
    assert cost.usual_model(_plugin("p", "opus", "sonnet", "sonnet")) == "sonnet"
    assert cost.usual_model(_plugin("p", "opus", "haiku")) == "haiku"  # a tie goes to the cheaper tier
    assert cost.usual_model(_plugin("p")) == cost.usual_model(None) == "sonnet"
    assert cost.working_plugins(["a"], "coord") == ["a"]
    assert cost.working_plugins(["a", "b"], "coord") == ["coord", "a", "b"]


def test_decide_alone_and_a_team_without_agents_follow_the_same_model():
    plugins = {p.name: p for p in (_plugin("a", "opus"), _plugin("b"), _plugin("coord", "haiku"))}
    ranked = [RankedPlugin("a", 90, ("x",)), RankedPlugin("b", 80, ("y",))]
    d = decide(ranked, ["x", "y"], "simple", 1000, True, RuleAsks(), plugins, DecideSettings(coordinator="coord"))
    assert [p.plugin for p in d.collaboration_plan.phases] == ["a", "b"]
    expected = cost.estimate(["haiku", "opus", "sonnet"], "simple")  # coordinator, a, b
    assert d.estimated_cost == expected
    registry = AgentRegistry.build([plugins["b"]], normalize)  # no agent of a or coord is known
    phases = [Phase("x", "a"), Phase("y", "b", ("x",))]
    team = build_team(registry, phases, ["x"], [], [], "coord", "simple")
    assert team.coordinator is None and team.specialists == ()
    assert team.total_cost == cost.estimate(["sonnet", "sonnet", "sonnet"], "simple")
