"""The whole pipeline on the shipped project and the corpus: facts, rules, scores, decision, team."""

from __future__ import annotations

from arbiter.project.snapshot import build_snapshot
from arbiter.routing.classify import classify
from arbiter.routing.match import Health
from arbiter.routing.pipeline import Request, Router

APPENDIX_A = "Build a FastAPI endpoint with MongoDB and Keycloak auth"


def test_seed_appendix_a(shipped_router):
    result = shipped_router.route(Request(APPENDIX_A, request_id="req_abc123"))
    data = result.to_json()
    c = data["classification"]
    assert {"backend", "api", "database", "authentication"} <= set(c["domain"])
    assert {"fastapi", "mongodb", "keycloak"} <= set(c["contexts"])
    assert {"rest-api", "jwt-auth"} <= set(c["patterns"])
    assert c["complexity"] == "moderate" and c["estimatedDuration"] == 1_800_000
    scores = data["capabilityScores"]
    assert [s["plugin"] for s in scores[:2]] == ["fastapi-backend", "lobbi-platform-manager"]
    lobbi = {(m["type"], m["value"]) for m in scores[1]["capabilities"]}
    assert {("domain", "authentication"), ("context", "keycloak")} <= lobbi
    decision = data["routingDecision"]
    assert decision["primaryPlugin"] == "fastapi-backend"
    assert decision["fallbackPlugins"][0] == "lobbi-platform-manager"
    phases = decision["collaborationPlan"]["phases"]
    assert phases[0] == {"domain": "backend", "plugin": "fastapi-backend", "dependencies": [], "parallel": False}
    assert phases[1] == {
        "domain": "authentication",
        "plugin": "lobbi-platform-manager",
        "dependencies": ["backend"],
        "parallel": False,
    }
    assert decision["collaborationPlan"]["coordinator"] == "jira-orchestrator"
    assert decision["executionStrategy"] == "sequential_collaboration"
    assert data["requestId"] == "req_abc123" and data["userInput"] == APPENDIX_A
    fired = [f["rule"] for f in data["trace"]["rulesFired"]]
    assert fired[:3] == [
        "keycloak-auth-goes-to-platform",
        "api-work-with-auth-stays-on-backend",
        "backend-led-work-is-sequential",
    ]
    assert data["trace"]["rulesFired"][0]["source"].endswith("routing.arb:3")
    team = data["agentTeam"]
    assert team["coordinator"]["plugin"] == "jira-orchestrator"
    assert {s["plugin"] for s in team["specialists"]} == {"fastapi-backend", "lobbi-platform-manager"}


def test_no_route_with_candidates(shipped_router):
    result = shipped_router.route(Request("what's the weather in Paris tomorrow"))
    assert result.decision.primary_plugin is None
    assert result.to_json()["routingDecision"]["primaryPlugin"] is None


def test_open_circuit_and_down_plugins_are_skipped(shipped_router):
    health = {"fastapi-backend": Health(circuit="open")}
    result = shipped_router.route(Request(APPENDIX_A), health)
    assert result.decision.primary_plugin != "fastapi-backend"
    fastapi = result.score_of("fastapi-backend")
    assert not fastapi.eligible and fastapi.reason == "circuit breaker is open"
    assert "avoid-open-circuits" in [f.rule for f in result.evaluation.firings]
    why = shipped_router.why_not(result, "fastapi-backend")
    assert any("circuit breaker is open" in line for line in why)
    down = shipped_router.route(
        Request("create a keycloak realm for the tenant"), {"lobbi-platform-manager": Health("down")}
    )
    assert down.decision.primary_plugin != "lobbi-platform-manager"


def test_caller_acls_are_applied(shipped_router):
    result = shipped_router.route(Request("write a home assistant automation for the lights", caller="exec-automator"))
    ha = result.score_of("home-assistant")
    assert not ha.eligible and "exec-automator" in ha.reason
    assert result.decision.primary_plugin != "home-assistant"


def test_rule_requirement_wins_and_strategy(shipped_router):
    result = shipped_router.route(Request("onboard a new tenant acme with keycloak and provision resources"))
    assert result.decision.primary_plugin == "lobbi-platform-manager"
    assert result.decision.execution_strategy == "saga"
    assert "ahling-command-center" in result.collaborators()


def test_files_point_at_plugins(shipped_router):
    result = shipped_router.route(Request("tidy this up", ("backend/app/routers/users.py",)))
    assert result.decision.primary_plugin == "fastapi-backend"
    assert any(m.type == "file" for m in result.score_of("fastapi-backend").capabilities)


def test_rule_loop_does_not_lose_the_request(project):
    (project / "rules" / "loop.arb").write_text(
        "rule ping {\n  when fact pong or not fact started\n  then retract pong\n       assert ping\n       assert started\n}\n"
        "rule pong {\n  when fact ping\n  then retract ping\n       assert pong\n}\n"
    )
    router = Router(build_snapshot(project), engine="python")
    result = router.route(Request(APPENDIX_A))
    assert result.decision.primary_plugin == "fastapi-backend"
    assert "ping" in result.rule_error and "pong" in result.rule_error


def test_classifier_weighs_rare_terms_word_forms_and_typos(corpus_router):
    classifier = corpus_router.classifier
    top = lambda text: classify(text, (), classifier).relevance[0].name  # noqa: E731
    assert top("zigbee sensors in the hallway") == "home-assistant-architect"
    assert top("animating the headline with springs") == "react-animation-studio"
    assert top("homeassistant dashbaord") == "home-assistant-architect"  # typo
    c = classify("create a thing for the project", (), classifier)
    assert not c.relevance or c.relevance[0].score < 1.2  # only common words: weak evidence


def test_urgency_and_complexity(shipped_router):
    c = shipped_router.route(Request("URGENT: prod is down, the kubernetes deployment is broken")).classification
    assert c.urgency >= 8
    big = shipped_router.route(
        Request(
            "migrate the entire platform architecture to kubernetes, refactor the api and the frontend, "
            "and move auth to keycloak across every tenant",
            ("a.py", "b.py", "c.tsx", "d.tf"),
        )
    ).classification
    assert big.complexity == "complex"
    assert shipped_router.route(Request("rename a variable")).classification.complexity == "simple"
