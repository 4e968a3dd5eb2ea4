"""The explain JSON a script can rely on, and the explain text a user reads."""

from __future__ import annotations

import json

from click.testing import CliRunner

from arbiter.cli import main

APPENDIX_A = "Build a FastAPI endpoint with MongoDB and Keycloak auth"
KEYS = {
    "requestId",
    "schemaVersion",
    "userInput",
    "files",
    "caller",
    "classification",
    "capabilityScores",
    "routingDecision",
    "noRoute",
    "agentTeam",
    "rulesHash",
    "timings",
    "trace",
    "circuits",
    "whyNot",
}
DECISION_KEYS = {
    "primaryPlugin",
    "fallbackPlugins",
    "collaborationPlan",
    "executionStrategy",
    "estimatedCost",
    "estimatedDuration",
    "nearestCandidates",
    "notes",
    "unservedPlugins",
}


def run(project, *args, input=None):
    return CliRunner().invoke(main, ["--root", str(project), *args, "--no-record"], input=input)


def explain(project, text, *args):
    result = run(project, "explain", text, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_actions_are_typed_json(project):
    data = explain(project, APPENDIX_A)
    actions = [a for f in data["trace"]["rulesFired"] for a in f["actions"]]
    assert {"action": "prefer", "plugin": "fastapi-backend", "weight": 15.0} in actions
    collaborate = next(a for a in actions if a["action"] == "collaborate")
    assert collaborate == {
        "action": "collaborate",
        "plugin": "lobbi-platform-manager",
        "domain": "authentication",
        "after": ["backend"],
        "parallel": False,
    }
    assert "Prefer(" not in json.dumps(data) and "='" not in json.dumps(data["trace"])
    text = run(project, "explain", APPENDIX_A).stdout
    assert "-> prefer fastapi-backend by 15" in text
    assert "-> collaborate lobbi-platform-manager on authentication after backend" in text


def test_the_same_keys_always(project):
    routed, unrouted = explain(project, APPENDIX_A), explain(project, "write a poem about the sea")
    assert set(routed) == set(unrouted) == KEYS
    assert routed["schemaVersion"] == unrouted["schemaVersion"] == 2
    assert set(routed["routingDecision"]) == set(unrouted["routingDecision"]) == DECISION_KEYS
    assert routed["files"] == [] and routed["caller"] is None and routed["whyNot"] is None
    assert routed["noRoute"] is None and routed["routingDecision"]["unservedPlugins"] == []
    assert all("reason" in s for s in routed["capabilityScores"])
    assert list(routed)[0] == "requestId"


def test_no_route_states_thresholds_and_distances(project):
    data = explain(project, "write a poem about the sea")
    gate = data["noRoute"]
    assert set(gate["thresholds"]) == {"minFit", "minScore"}
    assert gate["candidates"], gate
    for c in gate["candidates"]:
        assert set(c) >= {"plugin", "fit", "fitShort", "score", "scoreShort", "matchedDomain"}
        assert c["fitShort"] > 0 or c["scoreShort"] > 0
    text = run(project, "explain", "write a poem about the sea").stdout
    assert "thresholds   a matched declared domain, or text fit >= " in text
    assert "short)" in text and "near         " in text


def test_why_not_an_unknown_plugin_is_a_usage_error(project):
    result = run(project, "explain", APPENDIX_A, "--why-not", "home-asistant")
    assert result.exit_code == 2
    assert "did you mean 'home-assistant'" in result.output.lower()


def test_a_long_request_is_shortened_in_the_header(project):
    text = "deploy the worker service to kubernetes " * 10
    header = run(project, "explain", text).stdout.splitlines()[0]
    assert f"… ({len(text):,} characters)" in header
    assert len(header) < 200


def test_evidence_is_in_the_words_of_the_request(project):
    text = "Build a FastAPI endpoint with MongoDB and Keycloak auth, deploying notifications"
    data = explain(project, text)
    said = set(text.replace(",", "").split())
    evidence = [w for s in data["capabilityScores"] for e in s["evidence"] for w in e.split()]
    evidence += [
        w for d in data["classification"]["evidence"]["domains"].values() for e in d["evidence"] for w in e.split()
    ]
    assert evidence and all(w in said for w in evidence), [w for w in evidence if w not in said]
    human = run(project, "explain", text).stdout
    assert "from: deploying" in human and "builds" not in human


def test_collaboration_messages_name_the_right_side(project):
    manifest = project / "plugins" / "lobbi-platform-manager" / ".claude-plugin" / "plugin.json"
    data = json.loads(manifest.read_text())
    data["routing"]["acceptsRoutingFrom"] = ["jira-orchestrator"]
    manifest.write_text(json.dumps(data))
    with (project / "rules" / "routing.arb").open("a") as rules:
        rules.write(
            "\nrule backend-helps-itself {\n  priority 5\n  when domain backend\n"
            '  then collaborate fastapi-backend on api after backend\n  because "a self collaboration"\n}\n'
            "\nrule after-auth {\n  priority 4\n  when domain backend\n"
            "  then collaborate jira-orchestrator on orchestration after authentication\n"
            '  because "waits on the auth phase"\n}\n'
        )
    notes = explain(project, APPENDIX_A)["routingDecision"]["notes"]
    refused = [n for n in notes if "lobbi-platform-manager" in n and "skipped" in n]
    assert refused and "acceptsRoutingFrom of lobbi-platform-manager" in refused[0]
    assert "canRouteTo" not in refused[0]
    assert "collaboration with fastapi-backend skipped: it is the primary plugin itself" in notes
    plan = explain(project, APPENDIX_A)["routingDecision"]["collaborationPlan"] or {"phases": []}
    names = {p["domain"] for p in plan["phases"]} | {p["plugin"] for p in plan["phases"]}
    assert all(d in names for p in plan["phases"] for d in p["dependencies"])
    assert any("dropped from the plan: it waits on authentication" in n for n in notes)


def test_route_input_validates_each_line(project, tmp_path):
    lines = [
        json.dumps({"id": "ok", "text": "create a keycloak realm for tenant acme"}),
        json.dumps({"id": "a"}),
        json.dumps({"text": "   "}),
        json.dumps({"text": "deploy", "files": "k8s/app.yaml"}),
        json.dumps({"text": "deploy", "files": [1]}),
        "[1, 2]",
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run(project, "route", "--input", str(path))
    assert result.exit_code == 1
    assert f"{path}:2: `text` is required and must be a non-empty string" in result.stderr
    assert f"{path}:3: `text` is required" in result.stderr
    assert f"{path}:4: `files` must be a list of strings" in result.stderr
    assert f"{path}:5: `files` must be a list of strings" in result.stderr
    assert f"{path}:6: a line is a JSON object" in result.stderr
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert out[0]["requestId"] == "ok" and [o.get("line") for o in out[1:]] == [2, 3, 4, 5, 6]
