"""One ACL check (acceptsRoutingFrom / canRouteTo), on the plugin model, used by match, decide and lint."""

from __future__ import annotations

from pathlib import Path

from arbiter.dsl.program import lint

from arbiter.project.model import Plugin, Routing
from arbiter.routing.decide import RankedPlugin, RuleAsks, decide
from arbiter.routing.pipeline import Request


def plugin(name: str, can=None, accepts=None) -> Plugin:
    return Plugin(
        name=name, path=name, kind="enhanced", routing=Routing(can_route_to=can, accepts_routing_from=accepts)
    )


OPEN = plugin("open")
PICKY = plugin("picky", accepts=("friend",))
SHY = plugin("shy", can=("friend",))
BOTH = plugin("both", can=(), accepts=())


def test_the_refusal_names_the_side_that_refused():
    assert OPEN.route_refusal(plugin("other")) is None
    assert OPEN.route_refusal(PICKY) == "picky does not accept routing from open (acceptsRoutingFrom of picky)"
    assert SHY.route_refusal(OPEN) == "shy may not route to open (canRouteTo of shy)"
    assert plugin("friend").route_refusal(PICKY) is None and SHY.route_refusal(plugin("friend")) is None
    assert SHY.route_refusal(PICKY) == (
        "shy may not route to picky (canRouteTo of shy); "
        "picky does not accept routing from shy (acceptsRoutingFrom of picky)"
    )
    assert BOTH.route_refusal(BOTH) is None  # a plugin always works with itself


def test_decide_blames_the_side_that_refused():
    plugins = {p.name: p for p in (OPEN, PICKY)}
    ranked = [RankedPlugin("open", 90, ("x",)), RankedPlugin("picky", 80, ("y",))]
    d = decide(ranked, ["x", "y"], "simple", 1000, True, RuleAsks(), plugins)
    assert d.collaboration_plan is None
    assert d.notes == ("picky covers y, but " + OPEN.route_refusal(PICKY),)


def test_match_lint_and_decide_say_the_same_on_the_shipped_project(shipped_router, tmp_path: Path):
    plugins = shipped_router.snapshot.plugins
    refusal = plugins["exec-automator"].route_refusal(plugins["home-assistant"])
    assert refusal is not None and "home-assistant" in refusal
    result = shipped_router.route(Request("write a home assistant automation for the lights", caller="exec-automator"))
    assert result.score_of("home-assistant").reason == refusal
    (tmp_path / "t.arb").write_text("rule r { when caller is exec-automator then require home-assistant }\n")
    (found,) = [d for d in lint([tmp_path], plugins) if d.code == "E401"]
    assert found.message == f"requests from exec-automator may not be routed to home-assistant: {refusal}"
