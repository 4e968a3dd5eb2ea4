"""`arbiter test`: conditions a case routes under, every assertion, case-file checks at
file:line:col, -k, --coverage and the explain a failing case shows."""

from __future__ import annotations

import json

from click.testing import CliRunner

from arbiter.cli import main

APPENDIX_A = "Build a FastAPI endpoint with MongoDB and Keycloak auth"
REALM = "create a Keycloak realm with roles for the new tenant"


def run(project, *args):
    return CliRunner().invoke(main, ["--root", str(project), *args])


def write(tmp_path, text, name="c.test.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_assertion_passes_when_true(project, tmp_path):
    cases = write(
        tmp_path,
        f"""
- text: {APPENDIX_A}
  expect: fastapi-backend
  fired: [keycloak-auth-goes-to-platform, api-work-with-auth-stays-on-backend]
  not_fired: [smart-home-requests]
  strategy: sequential_collaboration
  collaborators: [lobbi-platform-manager]
  fallbacks: {{includes: [jira-orchestrator]}}
- {{text: write a poem about the sea, no_route: true, strategy: none}}
""",
    )
    result = run(project, "test", str(cases), "-v")
    assert result.exit_code == 0, result.output
    assert "2/2 passed" in result.stdout


def test_conditions_change_the_route(project, tmp_path):
    """unserved and circuits are the health the case routes under."""
    cases = write(
        tmp_path,
        f"""
- text: {REALM}
  unserved: [lobbi-platform-manager]
  expect: lobbi-platform-manager
- text: {REALM}
  circuits: {{lobbi-platform-manager: open}}
  expect: lobbi-platform-manager
- text: {REALM}
  circuits: {{lobbi-platform-manager: half-open}}
  expect: lobbi-platform-manager
""",
    )
    report = json.loads(run(project, "test", str(cases), "--json").stdout)
    assert [c["passed"] for c in report["cases"]] == [False, False, True]
    assert report["cases"][0]["conditions"]["unserved"] == ["lobbi-platform-manager"]
    assert report["cases"][1]["observed"]["primary"] != "lobbi-platform-manager"


def test_failing_case_shows_the_explain_of_why(project, tmp_path):
    cases = write(
        tmp_path,
        f"""
- text: {APPENDIX_A}
  expect: home-assistant
  not_fired: [keycloak-auth-goes-to-platform]
  fallbacks: [exec-automator]
  excluded: [frontend-powerhouse]
""",
    )
    result = run(project, "test", str(cases))
    assert result.exit_code == 1
    out = result.stdout
    for part in (
        "primary: expected home-assistant, got fastapi-backend",
        "not_fired: expected keycloak-auth-goes-to-platform not to fire",
        "fallbacks: expected [exec-automator], got [",
        "excluded: expected a rule to exclude frontend-powerhouse",
        "facts     domains: authentication",
        "rules     keycloak-auth-goes-to-platform (",
        "scores    fastapi-backend",
        "decision  primary fastapi-backend",
    ):
        assert part in out, part
    report = json.loads(run(project, "test", str(cases), "--json").stdout)
    case = report["cases"][0]
    assert len(case["failures"]) == 4
    assert case["explain"]["decision"]["primary"] == "fastapi-backend"
    assert case["explain"]["rulesFired"][0]["rule"] == "keycloak-auth-goes-to-platform"
    assert case["assertions"]["primary"] == "home-assistant"


def test_case_file_findings_point_at_file_line_col(project, tmp_path):
    cases = write(
        tmp_path,
        """- text: create a keycloak realm
  expct: lobbi-platform-manager
  fired: [keycloak-auth-goes-to-platfrom]
  circuits: {home-asistant: opn}
  strategy: sequentail_collaboration
  files: src/app.py
- {text: create a keycloak realm, expect: lobbi-platform-manger}
""",
    )
    result = run(project, "test", str(cases))
    assert result.exit_code == 2
    out = result.stdout
    assert f"{cases}:2:3: error[E050]: unknown key 'expct' in a test case" in out
    assert "hint: did you mean 'expect'?" in out
    assert f"{cases}:3:11: error[E050]: unknown rule 'keycloak-auth-goes-to-platfrom'" in out
    assert "did you mean 'keycloak-auth-goes-to-platform'?" in out
    assert "unknown plugin 'home-asistant'" in out and "did you mean 'home-assistant'?" in out
    assert "unknown circuit state 'opn'" in out and "did you mean 'open'?" in out
    assert "did you mean 'sequential_collaboration'?" in out
    assert "`files` must be a list of strings" in out
    assert f"{cases}:7:" in out and "unknown plugin 'lobbi-platform-manger'" in out
    assert "      fired: [keycloak-auth-goes-to-platfrom]\n              ^" in out  # the line and a caret


def test_unreadable_case_file_is_exit_2(project, tmp_path):
    assert run(project, "test", str(write(tmp_path, "- {text: [unclosed\n"))).exit_code == 2
    assert run(project, "test", str(write(tmp_path, "text: not a list\n"))).exit_code == 2
    assert run(project, "test", str(write(tmp_path, "- {text: a request}\n"))).exit_code == 2  # asserts nothing


def test_k_filters_by_name_and_text(project):
    result = run(project, "test", "-k", "keycloak", "-v")
    assert result.exit_code == 0
    assert "2/2 passed (21 deselected by -k)" in result.stdout
    result = run(project, "test", "-k", "keycloak and not realm", "-v")
    assert "1/1 passed" in result.stdout and "seed appendix A" in result.stdout
    assert run(project, "test", "-k", "poem or weather", "--json").stdout.count('"name"') == 2
    assert run(project, "test", "-k", "(unclosed").exit_code == 2


def test_coverage_lists_rules_no_case_fires(project):
    result = run(project, "test", "--coverage")
    assert result.exit_code == 0
    assert "Coverage: " in result.stdout
    assert "not fired  rules/routing.arb:" in result.stdout or "not fired  " in result.stdout
    report = json.loads(run(project, "test", "--coverage", "--json").stdout)
    names = {r["rule"] for r in report["uncoveredRules"]}
    assert "keycloak-auth-goes-to-platform" not in names
    assert all(":" in r["source"] for r in report["uncoveredRules"])
    assert json.loads(run(project, "test", "--json").stdout)["uncoveredRules"] is None
