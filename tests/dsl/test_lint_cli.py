"""`arbiter lint` in a real project and in CI: root discovery, suppressions, severities, formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from arbiter.dsl.suppress import known_codes
from click.testing import CliRunner

from arbiter.cli import main

VOCABULARY = 'domain payments {\n  keywords "invoice"\n}\n'
GOOD = 'rule pay {\n  when domain payments\n  then prefer home-assistant\n  because "invoices"\n}\n'
NO_REASON = "rule nowhy {\n  when domain payments\n  then prefer home-assistant\n}\n"


@pytest.fixture
def project(tmp_path: Path, repo: Path) -> Path:
    """A project with one plugin, a vocabulary file, and files beside the rules that are not rules."""
    root = tmp_path / "proj"
    shutil.copytree(repo / "plugins" / "home-assistant", root / "plugins" / "home-assistant")
    rules = root / "rules"
    rules.mkdir()
    (rules / "a-vocabulary.arb").write_text(VOCABULARY)
    (rules / "main.arb").write_text(GOOD)
    (rules / "README.md").write_text("# Rules\n\nrule { this is prose }\n")
    (rules / "main.test.yaml").write_text("- text: pay the invoice\n  expect: {primary: home-assistant}\n")
    (root / "configs").mkdir()
    return root


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_a_file_is_judged_within_its_project_from_anywhere(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the project: the absolute path finds it
    assert run("lint", str(project / "rules" / "main.arb"))[0] == 0
    monkeypatch.chdir(project)  # relative path, from the root
    assert run("lint", "rules/main.arb")[0] == 0
    monkeypatch.chdir(project / "rules")  # from a subfolder, no path: the project's rules/
    code, _, err = run("lint")
    assert code == 0 and "2 file(s) checked" in err
    assert run("lint", "main.arb")[0] == 0


def test_explicit_root_wins_over_discovery(project, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = run("--root", str(empty), "lint", str(project / "rules" / "main.arb"))
    assert code == 1 and "E103" in out and "E101" in out  # neither the domain nor the plugin is known there


def test_only_arb_files_are_read_and_others_named_are_a_usage_error(project):
    code, out, err = run("lint", str(project / "rules"))
    assert code == 0 and "E001" not in out and "2 file(s) checked" in err
    code, _, err = run("lint", str(project / "rules" / "README.md"))
    assert code == 2 and "not a rule file" in err and "README.md" in err


def test_fail_level_from_option_and_config(project):
    (project / "rules" / "main.arb").write_text(NO_REASON)
    target = str(project / "rules" / "main.arb")
    code, out, _ = run("lint", target)
    assert code == 0 and "W205" in out
    assert run("lint", "--fail-level", "warning", target)[0] == 1
    (project / "configs" / "lint.yaml").write_text("fail_level: warning\n")
    assert run("lint", target)[0] == 1
    assert run("lint", "--fail-level", "error", target)[0] == 0  # the option wins


def lint_json(project: Path, text: str, *args: str) -> list[dict]:
    (project / "rules" / "main.arb").write_text(text)
    code, out, _ = run("lint", "--format", "json", *args, str(project / "rules" / "main.arb"))
    assert code in (0, 1)
    return json.loads(out)


def codes(items: list[dict]) -> list[tuple[str, int]]:
    return [(i["code"], i["line"]) for i in items]


@pytest.mark.parametrize(
    "text",
    [
        "rule nowhy {  # arbiter: ignore[W205]\n  when domain payments\n  then prefer home-assistant\n}\n",
        "# arbiter: ignore[W205]\nrule nowhy {\n  when domain payments\n  then prefer home-assistant\n}\n",
        "# arbiter: ignore[W205]\n# arbiter: ignore[W204]\nrule nowhy {\n  then prefer home-assistant\n}\n",
        "rule nowhy {  # arbiter: ignore[W204, w205]\n  then prefer home-assistant\n}\n",
        "rule nowhy {  # arbiter: ignore\n  then prefer home-assistant\n}\n",
    ],
)
def test_suppressions_silence_their_line(project, text):
    assert lint_json(project, text) == []


def test_a_suppression_covers_only_its_codes_and_its_line(project):
    text = "# arbiter: ignore[W204]\nrule nowhy {\n  when domain payments\n  then prefer home-assistant\n}\n"
    found = codes(lint_json(project, text))
    assert ("W205", 2) in found and ("W501", 1) in found  # W204 is not there: the suppression is unused
    text = "rule a {  # arbiter: ignore[W205]\n  when domain payments\n  then prefer home-assistant\n}\n" + NO_REASON
    assert ("W205", 5) in codes(lint_json(project, text))


def test_unused_and_unknown_suppressions_are_findings(project):
    found = lint_json(project, GOOD.replace("rule pay {", "rule pay {  # arbiter: ignore[W205, X999]"))
    assert sorted(codes(found)) == [("W501", 1), ("W502", 1)]
    assert "X999" in found[1]["message"] or "X999" in found[0]["message"]
    assert codes(lint_json(project, GOOD + "# arbiter: ignore\n")) == [("W501", 6)]


def test_severity_per_code_from_configs(project):
    (project / "configs" / "lint.yaml").write_text("severity:\n  W205: error\n")
    (project / "rules" / "main.arb").write_text(NO_REASON)
    code, out, _ = run("lint", str(project / "rules"))
    assert code == 1 and "error[W205]" in out
    (project / "configs" / "lint.yaml").write_text("severity:\n  W205: off\n")
    code, out, _ = run("lint", str(project / "rules"))
    assert code == 0 and "W205" not in out
    (project / "configs" / "lint.yaml").write_text('severity:\n  W205: "off"\n  W204: loud\n')
    code, out, _ = run("lint", str(project / "rules"))
    # a lint.yaml with errors is reported and ignored as a whole, as every config file is
    assert code == 1 and "lint.yaml:3:3: error[E020]" in out and "warning[W205]" in out


def test_a_suppression_of_a_code_turned_off_is_not_unused(project):
    (project / "configs" / "lint.yaml").write_text("severity:\n  W205: off\n")
    assert lint_json(project, NO_REASON.replace("{", "{  # arbiter: ignore[W205]", 1)) == []


def test_check_config_validates_lint_yaml(project):
    (project / "configs" / "lint.yaml").write_text("severity:\n  oops: error\nfail_level: never\n")
    code, out, _ = run("--root", str(project), "check-config")
    assert code == 1 and "lint.yaml" in out and "fail_level" in out and "severity.oops" in out


def test_json_has_end_positions(project):
    (item,) = lint_json(project, GOOD.replace("prefer home-assistant", "prefer home-assistent"))
    assert (item["code"], item["line"], item["col"], item["endLine"], item["endCol"]) == ("E101", 3, 15, 3, 29)


def test_github_annotations(project):
    (project / "rules" / "main.arb").write_text(NO_REASON.replace("home-assistant", "home-assistent"))
    code, out, _ = run("lint", "--format", "github", str(project / "rules" / "main.arb"))
    lines = out.splitlines()
    assert code == 1 and len(lines) == 2
    path = str(project / "rules" / "main.arb")
    assert lines[0].startswith(f"::warning file={path},line=1,col=") and ",title=W205::" in lines[0]
    assert lines[1].startswith(f"::error file={path},line=3,col=15,endLine=3,endColumn=29,title=E101::")
    assert "unknown plugin 'home-assistent' (hint%3A" not in lines[1]  # only properties escape ':'


def test_sarif_log(project):
    (project / "rules" / "main.arb").write_text(NO_REASON.replace("home-assistant", "home-assistent"))
    code, out, _ = run("lint", "--format", "sarif", str(project / "rules" / "main.arb"))
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0" and "sarif-2.1.0" in log["$schema"]
    (run_,) = log["runs"]
    rules = run_["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} >= {"E001", "E101", "W205", "W501"}
    assert all(r["shortDescription"]["text"] for r in rules)
    results = {r["ruleId"]: r for r in run_["results"]}
    assert rules[results["E101"]["ruleIndex"]]["id"] == "E101" and results["E101"]["level"] == "error"
    region = results["E101"]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 3, "startColumn": 15, "endLine": 3, "endColumn": 29}
    assert results["W205"]["level"] == "warning"


def test_every_code_has_a_description():
    known = known_codes()
    assert {"E001", "E101", "E401", "W108", "W205", "W501", "W502"} <= set(known)
    assert all(known.values())
