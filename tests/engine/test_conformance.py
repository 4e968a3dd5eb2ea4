"""One suite, both engines: durable-rules and the pure-Python evaluator must agree exactly."""

from __future__ import annotations

import random
import threading

import pytest
from arbiter.dsl import ir

from arbiter.routing.engine.engines import durable_available, strict_engine
from arbiter.routing.engine.semantics import RuleLoopError

ENGINES = ["python", pytest.param("durable", marks=pytest.mark.skipif(not durable_available(), reason="no durable"))]
R = ir.Rule


@pytest.fixture(params=ENGINES)
def engine(request):
    return strict_engine(request.param)


def run(engine, rules, facts):
    compiled = engine.compile(ir.RuleSet(tuple(rules), "hash-1"))
    try:
        return engine.evaluate(compiled, facts)
    finally:
        engine.release(compiled)


def fired(engine, rules, facts):
    return [f.rule for f in run(engine, rules, facts).firings]


FACTS = {
    "text": "Build a FastAPI endpoint with Keycloak",
    "files": ("src/api/users.py", "Dockerfile"),
    "complexity": "moderate",
    "urgency": 7,
    "domain.backend": 0.8,
    "context.keycloak": True,
    "plugin.x.health": "up",
    "plugin.x.circuit": "closed",
}

CONDITIONS = [
    (ir.Exists("domain.backend"), True),
    (ir.Exists("domain.frontend"), False),
    (ir.Not(ir.Exists("domain.frontend")), True),
    (ir.Compare("urgency", ">=", 7), True),
    (ir.Compare("urgency", ">", 7), False),
    (ir.Compare("complexity", "==", "moderate"), True),
    (ir.Compare("complexity", "!=", "moderate"), False),
    (ir.Compare("missing", "!=", "x"), False),
    (ir.Compare("text", "<", 3), False),
    (ir.OneOf("complexity", ("simple", "moderate")), True),
    (ir.OneOf("missing", ("a",)), False),
    (ir.Contains("files", "Dockerfile"), True),
    (ir.Contains("text", "Build"), False),
    (ir.Matches("text", r"keycloak", "i"), True),
    (ir.Matches("text", r"keycloak", ""), False),
    (ir.Glob("files", "**/*.py"), True),
    (ir.Glob("files", "src/*.py"), False),
    (ir.Glob("files", "Dockerfile"), True),
    (ir.Glob("files", "*.md"), False),
    (ir.All((ir.Exists("context.keycloak"), ir.Compare("plugin.x.health", "==", "up"))), True),
    (ir.Any_((ir.Exists("nope"), ir.Compare("plugin.x.circuit", "==", "open"))), False),
    (ir.Not(ir.All((ir.Exists("domain.backend"), ir.Exists("nope")))), True),
    (ir.All(()), True),
    (ir.Any_(()), False),
]


@pytest.mark.parametrize("cond,expected", CONDITIONS, ids=[repr(c)[:60] for c, _ in CONDITIONS])
def test_every_condition_kind(engine, cond, expected):
    assert fired(engine, [R("r", cond, (ir.Prefer("x", 1),))], FACTS) == (["r"] if expected else [])


def test_priority_orders_firing_and_ties_go_by_source_order(engine):
    rules = [
        R("low", ir.All(()), (ir.Prefer("a", 1),), 1),
        R("high", ir.All(()), (ir.Prefer("b", 1),), 10),
        R("tie-first", ir.All(()), (ir.Prefer("c", 1),), 5),
        R("tie-second", ir.All(()), (ir.Prefer("d", 1),), 5),
    ]
    result = run(engine, rules, {})
    assert [f.rule for f in result.firings] == ["high", "tie-first", "tie-second", "low"]
    assert [a.plugin for a in result.actions] == ["b", "c", "d", "a"]
    assert result.ruleset_hash == "hash-1"


def test_three_rule_forward_chain_fires_in_order(engine):
    rules = [
        R("c", ir.Exists("fact.y"), (ir.SetStrategy("saga"),), 100),
        R("b", ir.Exists("fact.x"), (ir.AssertFact("y"),), 50),
        R("a", ir.Exists("domain.backend"), (ir.AssertFact("x"),), 0),
    ]
    result = run(engine, rules, FACTS)
    assert [f.rule for f in result.firings] == ["a", "b", "c"]
    assert result.asserted == {"fact.x": True, "fact.y": True}
    assert result.firings[1].facts == {"fact.x": True}


def test_refraction_and_refire_after_retract(engine):
    rules = [
        R("set", ir.Not(ir.Exists("fact.done")), (ir.AssertFact("flag"),), 10),
        R("on-flag", ir.Exists("fact.flag"), (ir.Prefer("p", 1),), 5),
        R(
            "clear",
            ir.All((ir.Exists("fact.flag"), ir.Not(ir.Exists("fact.cleared")))),
            (ir.RetractFact("flag"), ir.AssertFact("cleared")),
            1,
        ),
        R("again", ir.Exists("fact.cleared"), (ir.AssertFact("flag"), ir.AssertFact("done")), 0),
    ]
    assert fired(engine, rules, {}) == ["set", "on-flag", "clear", "again", "on-flag"]


def test_asserted_values_compare(engine):
    rules = [
        R("tier", ir.All(()), (ir.AssertFact("tier", "gold"),), 2),
        R("gold", ir.Compare("fact.tier", "==", "gold"), (ir.Prefer("vip", 5),), 1),
        R("silver", ir.Compare("fact.tier", "==", "silver"), (ir.Prefer("std", 5),), 1),
    ]
    assert fired(engine, rules, {}) == ["tier", "gold"]


def test_ping_pong_loop_is_stopped_naming_the_rules(engine):
    rules = [
        R("start", ir.Not(ir.Exists("fact.started")), (ir.AssertFact("started"), ir.AssertFact("ping"))),
        R("ping", ir.Exists("fact.ping"), (ir.RetractFact("ping"), ir.AssertFact("pong"))),
        R("pong", ir.Exists("fact.pong"), (ir.RetractFact("pong"), ir.AssertFact("ping"))),
    ]
    with pytest.raises(RuleLoopError) as info:
        run(engine, rules, {})
    assert set(info.value.rules) == {"ping", "pong"}
    assert "ping" in str(info.value) and "pong" in str(info.value)


def test_concurrent_evaluations_agree(engine):
    rules = [R(f"r{i}", ir.Compare("urgency", ">=", i), (ir.Prefer(f"p{i}", i),), i % 3) for i in range(10)]
    compiled = engine.compile(ir.RuleSet(tuple(rules)))
    expected = [f.rule for f in engine.evaluate(compiled, FACTS).firings]
    failures: list[str] = []

    def worker() -> None:
        for _ in range(200):
            got = [f.rule for f in engine.evaluate(compiled, FACTS).firings]
            if got != expected:
                failures.append(repr(got))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.release(compiled)
    assert failures == []


def _random_condition(rng: random.Random, depth: int = 0) -> ir.Condition:
    facts = ["a", "b", "c", "fact.x", "fact.y", "text"]
    if depth < 2 and rng.random() < 0.4:
        kind = rng.choice(["all", "any", "not"])
        if kind == "not":
            return ir.Not(_random_condition(rng, depth + 1))
        items = tuple(_random_condition(rng, depth + 1) for _ in range(rng.randint(1, 3)))
        return ir.All(items) if kind == "all" else ir.Any_(items)
    fact = rng.choice(facts)
    choice = rng.random()
    if fact == "text":
        return ir.Matches("text", rng.choice(["api", "^x", "z$"]), rng.choice(["", "i"]))
    if choice < 0.3:
        return ir.Exists(fact)
    if choice < 0.7:
        return ir.Compare(fact, rng.choice(["==", "!=", "<", ">="]), rng.randint(0, 3))
    return ir.OneOf(fact, (1, 2))


def _random_rules(rng: random.Random) -> list[ir.Rule]:
    rules = []
    for i in range(rng.randint(1, 6)):
        actions: list[ir.Action] = [ir.Prefer(f"p{i}", 1)]
        if rng.random() < 0.5:
            actions.append(ir.AssertFact(rng.choice(["x", "y"]), rng.randint(0, 3)))
        if rng.random() < 0.2:
            actions.append(ir.RetractFact(rng.choice(["x", "y"])))
        rules.append(R(f"r{i}", _random_condition(rng), tuple(actions), rng.randint(0, 3)))
    return rules


@pytest.mark.skipif(not durable_available(), reason="no durable")
def test_randomized_differential_between_engines():
    rng = random.Random(20261124)
    python, durable = strict_engine("python"), strict_engine("durable")
    for _ in range(300):
        rules = _random_rules(rng)
        facts = {k: rng.randint(0, 3) for k in ("a", "b", "c") if rng.random() < 0.8}
        facts["text"] = rng.choice(["Build an API", "xyz", "nothing"])
        outcomes = []
        for engine in (python, durable):
            try:
                result = run(engine, rules, facts)
                outcomes.append(([f.rule for f in result.firings], result.actions, result.asserted))
            except RuleLoopError as exc:
                outcomes.append(("loop", set(exc.rules)))
        assert outcomes[0] == outcomes[1], rules
