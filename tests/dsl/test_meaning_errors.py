"""Meaning errors across rules: strategies in conflict at one priority (E111) and rules that
assert and retract each other in a loop (E112), each with its exact message and position."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from arbiter.dsl import ast, compiler, ir
from arbiter.dsl.cycles import loops
from arbiter.dsl.parser import parse
from arbiter.dsl.program import lint, load_rules

from arbiter.routing.engine.python_engine import PythonEngine
from arbiter.routing.engine.semantics import RuleLoopError


def _lint(tmp_path: Path, text: str, code: str) -> list[str]:
    (tmp_path / "t.arb").write_text(text)
    return [d.format().replace(str(tmp_path) + "/", "") for d in lint([tmp_path], {}) if d.code == code]


STRATEGIES = """\
rule api-is-a-saga {
  priority 50
  when domain api
  then strategy saga
  because "a"
}

rule backend-is-broadcast {
  priority 50
  when domain backend
  then strategy broadcast
  because "b"
}
"""


def test_conflicting_strategies_at_one_priority_name_the_first_rule(tmp_path):
    (tmp_path / "v.arb").write_text('domain api { keywords "api" }\ndomain backend { keywords "backend" }\n')
    assert _lint(tmp_path, STRATEGIES, "E111") == [
        "t.arb:11:17: error[E111]: rule 'backend-is-broadcast' sets strategy broadcast, but rule "
        "'api-is-a-saga' (t.arb:1) sets saga at the same priority 50, and both can fire on one request\n"
        "      then strategy broadcast\n"
        "                    ^\n"
        "  hint: give one of them a higher priority, or conditions that exclude each other"
    ]


@pytest.mark.parametrize(
    "change",
    [
        ("priority 50\n  when domain backend", "priority 40\n  when domain backend"),  # another priority
        ("strategy broadcast", "strategy saga"),  # the same strategy
        ("when domain backend", "when not domain api"),  # never together
        ("when domain api", "when caller is a and domain api"),  # callers exclude each other
    ],
)
def test_strategies_that_cannot_clash_pass(tmp_path, change):
    text = STRATEGIES.replace(*change)
    if "caller is a" in text:
        text = text.replace("when domain backend", "when caller is b")
    assert _lint(tmp_path, text, "E111") == []


PING_PONG = """\
rule start {
  when not fact started
  then assert started
       assert ping
  because "s"
}

rule ping {
  when fact ping
  then retract ping
       assert pong
  because "p"
}

rule pong {
  when fact pong
  then retract pong
       assert ping
  because "q"
}
"""


def test_assert_retract_loop_is_reported_once_at_its_first_rule(tmp_path):
    assert _lint(tmp_path, PING_PONG, "E112") == [
        "t.arb:8:1: error[E112]: rules 'ping' (t.arb:8) and 'pong' (t.arb:15) switch each other on and "
        "off with assert/retract: forward chaining would never settle\n"
        "    rule ping {\n"
        "    ^\n"
        "  hint: let one of them fire once: add `and not fact ping-done` to its condition and "
        "`assert ping-done` to its actions"
    ]


def test_the_engine_agrees_that_it_loops(tmp_path):
    (tmp_path / "t.arb").write_text(PING_PONG)
    bundle = load_rules([tmp_path], {})
    engine = PythonEngine()
    with pytest.raises(RuleLoopError):
        engine.evaluate(engine.compile(bundle.ruleset), {})


def test_value_changes_loop_too(tmp_path):
    text = (
        'rule one { when not fact tier == "gold" then assert tier = "gold" because "a" }\n'
        'rule two { when fact tier == "gold" then assert tier = "silver" because "b" }\n'
    )
    assert [line.split(": ", 1)[0] for line in _lint(tmp_path, text, "E112")] == ["t.arb:1:1"]


@pytest.mark.parametrize(
    "text",
    [
        # the fix the hint proposes: ping fires once
        PING_PONG.replace("when fact ping\n", "when fact ping and not fact ping-done\n").replace(
            "assert pong\n", "assert pong\n       assert ping-done\n"
        ),
        # asserts only: each rule fires once
        'rule a { when fact x then assert y because "a" }\nrule b { when fact y then assert x because "b" }\n'
        'rule c { then assert x because "c" }\n',
        # nothing ever starts the cycle: no rule asserts ping or pong first
        PING_PONG.split("rule ping", 1)[0].replace("assert ping", "assert other")
        + "rule ping"
        + PING_PONG.split("rule ping", 1)[1],
        # a fact that is switched off for good stops it (retracted, asserted by no other rule)
        'rule set { when not fact done then assert flag because "s" }\n'
        'rule clear { when fact flag and not fact cleared then retract flag assert cleared because "c" }\n'
        'rule again { when fact cleared then assert flag assert done because "a" }\n',
        # the two rules' other conditions exclude each other
        PING_PONG.replace("when fact ping\n", "when fact ping and caller is a\n").replace(
            "when fact pong\n", "when fact pong and caller is b\n"
        ),
    ],
)
def test_rules_that_settle_are_not_reported(tmp_path, text):
    assert _lint(tmp_path, text, "E112") == []


def test_shipped_rules_have_no_conflicts_or_loops(repo, shipped_plugins):
    found = [d for d in lint([repo / "rules"], shipped_plugins) if d.code in ("E111", "E112")]
    assert found == []


def test_reported_loops_match_the_engine_on_generated_programs():
    """Small generated programs that read only asserted facts, run with no facts: lint calls nearly
    every program that loops a loop, and nearly every one it calls a loop loops. (The check does
    not follow the order rules fire in, so a rule outside a cycle can still break it first.)"""
    rng = random.Random(7)
    engine = PythonEngine()
    reported = looping = both = 0
    for _ in range(1500):
        text = "\n".join(_random_rule(rng, i) for i in range(rng.randint(2, 4)))
        rules = [d for d in parse(text)[0].decls if isinstance(d, ast.Rule)]
        compiled = engine.compile(ir.RuleSet(tuple(compiler.rule(r, "t") for r in rules)))
        try:
            engine.evaluate(compiled, {})
            loops_at_run_time = False
        except RuleLoopError:
            loops_at_run_time = True
        found = bool(loops(rules))
        reported += found
        looping += loops_at_run_time
        both += found and loops_at_run_time
    assert looping > 10
    assert both >= 0.85 * reported
    assert both >= 0.85 * looping


def _random_rule(rng, index: int) -> str:
    facts = "abc"
    tests = [
        rng.choice([f"fact {f}", f"not fact {f}", f"fact {f} == {rng.randint(1, 2)}"])
        for f in rng.sample(facts, rng.randint(1, 2))
    ]
    writes = [
        rng.choice([f"assert {f}", f"retract {f}", f"assert {f} = {rng.randint(1, 2)}"])
        for f in rng.sample(facts, rng.randint(1, 2))
    ]
    return f"rule r{index} {{ priority {rng.randint(0, 2)} when {' and '.join(tests)} then {' '.join(writes)} }}"
