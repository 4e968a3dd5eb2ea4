"""explain, route (single and batch), test and decisions from the command line, with recording."""

from __future__ import annotations

import json

from click.testing import CliRunner

from arbiter.cli import main

APPENDIX_A = "Build a FastAPI endpoint with MongoDB and Keycloak auth"


def run(project, *args, input=None):
    return CliRunner().invoke(main, ["--root", str(project), *args], input=input)


def test_explain_human_and_json_and_why_not(project):
    human = run(project, "explain", APPENDIX_A, "--why-not", "home-assistant")
    assert human.exit_code == 0, human.output
    out = human.stdout
    for part in (
        "Facts",
        "domain       authentication",
        "Rules fired",
        "keycloak-auth-goes-to-platform",
        "routing.arb:3",
        "because: Keycloak",
        "Scores",
        "Decision",
        "primary      fastapi-backend",
        "2. authentication: lobbi-platform-manager after backend",
        "Agent team",
        "Why not home-assistant",
    ):
        assert part in out, part
    data = json.loads(run(project, "explain", APPENDIX_A, "--json", "--file", "src/api/x.py").stdout)
    assert set(data) >= {
        "requestId",
        "userInput",
        "classification",
        "capabilityScores",
        "routingDecision",
        "trace",
        "agentTeam",
    }
    assert data["routingDecision"]["primaryPlugin"] == "fastapi-backend"
    assert data["files"] == ["src/api/x.py"]


def test_route_batch_keeps_order_ids_and_survives_bad_lines(project):
    lines = [
        json.dumps({"id": "r1", "text": "create a keycloak realm for tenant acme"}),
        "{broken",
        json.dumps({"id": "r3", "text": "write a haiku about the moon"}),
        json.dumps({"id": "r4", "text": "terraform for the vpc", "files": ["infra/main.tf"]}),
    ]
    result = run(project, "route", "--input", "-", input="\n".join(lines) + "\n")
    assert result.exit_code == 1  # one bad line
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert [o.get("requestId", o.get("line")) for o in out] == ["r1", 2, "r3", "r4"]
    assert out[0]["routingDecision"]["primaryPlugin"] == "lobbi-platform-manager"
    assert out[2]["routingDecision"]["primaryPlugin"] is None
    assert "trace" not in out[0]
    decisions = json.loads(run(project, "decisions", "--last", "10", "--json").stdout)
    assert [d["requestId"] for d in decisions[:3]] == ["r4", "r3", "r1"]  # stored, newest first
    assert all(d["rulesHash"] for d in decisions)


def test_route_single_and_recorded_explain(project):
    result = run(project, "route", APPENDIX_A)
    assert result.exit_code == 0
    assert "primary: fastapi-backend" in result.stdout
    assert "plan: fastapi-backend (backend) -> lobbi-platform-manager (authentication)" in result.stdout
    assert run(project, "route").exit_code == 2
    run(project, "explain", "write a poem", "--json")
    rows = json.loads(run(project, "decisions", "--json").stdout)
    assert rows[0]["userInput"] == "write a poem" and rows[0]["primaryPlugin"] is None
    assert (project / ".arbiter" / "state.db").exists()


def test_arbiter_test_passes_and_fails(project, tmp_path):
    ok = run(project, "test")
    assert ok.exit_code == 0 and "23/23 passed" in ok.stdout
    bad = tmp_path / "bad.test.yaml"
    bad.write_text('- {text: write a poem, expect: fastapi-backend}\n- {text: "x"}\n')
    result = run(project, "test", str(bad))
    assert result.exit_code == 2 and "E050" in result.stdout  # a broken case file: nothing runs
    bad.write_text("- {text: write a poem, expect: fastapi-backend}\n")
    result = run(project, "test", str(bad), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == 1 and report["cases"][0]["got"] is None


def test_project_with_errors_refuses_to_route(project):
    (project / "rules" / "bad.arb").write_text("rule r { when domain api then prefer nobody }\n")
    result = run(project, "route", "anything")
    assert result.exit_code == 1
    assert "unknown plugin 'nobody'" in result.output
