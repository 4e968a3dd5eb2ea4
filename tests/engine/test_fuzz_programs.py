"""Lint clean means the program runs: large and odd generated programs that lint passes load, and
`arbiter explain` and `arbiter test` run on them, whichever engine ends up running them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from arbiter.dsl.program import lint
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from arbiter.cli import main
from arbiter.project.plugins import load_plugins

PLUGINS = ("fastapi-backend", "home-assistant", "jira-orchestrator", "exec-automator", "frontend-powerhouse")
DOMAINS = ("backend", "api", "authentication", "deployment", "frontend")
SHAPES = st.fixed_dictionaries(
    {
        "rules": st.one_of(st.integers(1, 60), st.integers(4080, 4110)),  # around durable's 4,095
        "facts": st.one_of(st.integers(1, 12), st.integers(240, 262)),  # around its 251 conditions
        "same": st.sampled_from([0, 0, 255, 257]),  # rules with one same condition, around its 256
        "ors": st.sampled_from([0, 0, 129]),  # rules with one same `or` condition, past its 128
        "files": st.integers(1, 6),
        "odd": st.booleans(),  # odd but valid: negative priorities, deep nesting, long names, unicode
        "seed": st.integers(0, 2**16),
    }
)


def _rule(n: int, shape: dict) -> str:
    fact = f"f{n % shape['facts']}"
    plugin = PLUGINS[(n + shape["seed"]) % len(PLUGINS)]
    cond = f"fact {fact} and urgency >= {n % 10}"
    if shape["odd"] and n % 3 == 0:
        cond = f'not (not ({cond} or (domain {DOMAINS[n % 5]} and not text contains "é{n}")))'
    priority = (n * 7919 + shape["seed"]) % 201 - 100 if shape["odd"] else n % 50
    name = f"g-{n}" + ("-x" * 40 if shape["odd"] and n % 11 == 0 else "")
    return f'rule {name} {{ priority {priority} when {cond} then prefer {plugin} by {n % 7 + 1} because "r{n}" }}\n'


def program(shape: dict) -> list[str]:
    """The text of each rule file of a generated program."""
    rules = [_rule(n, shape) for n in range(shape["rules"])]
    rules += [
        f'rule same-{n} {{ when domain api then avoid home-assistant because "s" }}\n' for n in range(shape["same"])
    ]
    rules += [
        f'rule or-{n} {{ when domain api or domain backend then avoid exec-automator because "o" }}\n'
        for n in range(shape["ors"])
    ]
    rules += [
        f'rule set-f{k} {{ when text contains "w{k}" then assert f{k} because "sets f{k}" }}\n'
        for k in range(shape["facts"])
    ]
    size = -(-len(rules) // shape["files"])
    return ["".join(rules[i : i + size]) for i in range(0, len(rules), size)]


@pytest.fixture(scope="module")
def project(repo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    shutil.copytree(repo / "configs", root / "configs")
    shutil.copytree(repo / "plugins", root / "plugins")
    (root / "rules").mkdir()
    return root


@pytest.fixture(scope="module")
def shipped_plugins(repo):
    plugins, _ = load_plugins([repo / "plugins"])
    return {p.name: p for p in plugins}


@settings(
    max_examples=4,  # a program of 4,000 rules takes seconds to lint and load three times
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a large program does not shrink fast
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(shape=SHAPES)
def test_lint_clean_programs_load_and_explain(project, shipped_plugins, shape):
    for old in (project / "rules").glob("*"):
        old.unlink()
    for index, text in enumerate(program(shape)):
        (project / "rules" / f"gen{index}.arb").write_text(text, encoding="utf-8")
    (project / "rules" / "gen.test.yaml").write_text(
        '- {text: "w1 build a fastapi endpoint", expect: fastapi-backend}\n', encoding="utf-8"
    )
    errors = [d for d in lint([project / "rules"], shipped_plugins) if d.severity == "error"]
    if errors:
        return
    runner = CliRunner()
    text = "w1 w2 w3 build a fastapi endpoint with urgent auth"
    result = runner.invoke(main, ["--root", str(project), "explain", text, "--json"])
    assert result.exit_code == 0, (shape, result.output, result.exception)
    assert json.loads(result.stdout)["trace"]["ruleError"] is None, shape
    tested = runner.invoke(main, ["--root", str(project), "test"])
    assert tested.exception is None or isinstance(tested.exception, SystemExit), tested.exception
