"""durable-rules' measured limits: each held exactly, and past each the Python engine takes over."""

from __future__ import annotations

import logging

import pytest
from arbiter.dsl import ir
from arbiter.dsl.engine_limits import MAX_CONDITIONS, MAX_RULES, MAX_SAME_CONDITION, MAX_SAME_OR_CONDITION, crossing

from arbiter.routing.engine.engines import FallbackEngine, durable_available, make_engine, strict_engine
from arbiter.routing.engine.semantics import EngineLimitError

pytestmark = pytest.mark.skipif(not durable_available(), reason="durable-rules not installed")


def many_rules(n: int, facts: int) -> tuple[ir.Rule, ...]:
    """``n`` rules spread over ``facts`` domains, as a large generated program would be."""
    return tuple(ir.Rule(f"r{i}", ir.Exists(f"domain.d{i % facts}"), (ir.Prefer(f"p{i}", 1),)) for i in range(n))


def same(n: int, cond: ir.Condition) -> tuple[ir.Rule, ...]:
    return tuple(ir.Rule(f"r{i}", cond, (ir.Prefer("p", 1),)) for i in range(n))


def distinct(n: int) -> tuple[ir.Rule, ...]:
    return tuple(ir.Rule(f"r{i}", ir.Compare("urgency", "==", i), (ir.Prefer("p", 1),)) for i in range(n))


AB = ir.All((ir.Exists("domain.a"), ir.Exists("domain.b")))
A_OR_B = ir.Any_((ir.Exists("domain.a"), ir.Exists("domain.b")))
CASES = [
    (many_rules(MAX_RULES, 100), many_rules(MAX_RULES + 1, 100), "at most 4,095 rules"),
    (distinct(MAX_CONDITIONS), distinct(MAX_CONDITIONS + 1), "at most 251 distinct conditions"),
    (same(MAX_SAME_CONDITION, AB), same(MAX_SAME_CONDITION + 1, AB), "at most 256 rules with the very same"),
    (same(MAX_SAME_OR_CONDITION, A_OR_B), same(MAX_SAME_OR_CONDITION + 1, A_OR_B), "at most 128 rules"),
]
FACTS = {"domain.a": 1, "domain.b": 1, "domain.d1": 1, "urgency": 3}
QUIET = {"urgency": 3}  # 128 rules matching at once would overflow durable's stack (the last test)


@pytest.mark.parametrize("fits,past,limit", CASES, ids=["rules", "conditions", "same", "same-or"])
def test_each_limit_is_exact(fits, past, limit):
    engine = strict_engine("durable")
    assert crossing(fits) is None
    compiled = engine.compile(ir.RuleSet(fits))
    facts = QUIET if fits[0].when == A_OR_B else FACTS
    assert engine.evaluate(compiled, facts).engine == "durable"  # durable-rules holds it, and runs it
    engine.release(compiled)
    assert crossing(past) is not None and crossing(past).index == len(past) - 1
    with pytest.raises(EngineLimitError, match=limit):
        engine.compile(ir.RuleSet(past))


@pytest.mark.parametrize("fits,past,limit", CASES, ids=["rules", "conditions", "same", "same-or"])
def test_past_a_limit_the_python_engine_runs_the_rules(fits, past, limit, caplog):
    engine = make_engine("durable")
    assert isinstance(engine, FallbackEngine)
    expected = strict_engine("python")
    want = expected.evaluate(expected.compile(ir.RuleSet(past)), FACTS)
    with caplog.at_level(logging.WARNING, logger="arbiter.engine"):
        compiled = engine.compile(ir.RuleSet(past))
        engine.compile(ir.RuleSet(past))
        got = engine.evaluate(compiled, FACTS)
    assert compiled.limit is not None and limit in compiled.limit
    assert [f.rule for f in got.firings] == [f.rule for f in want.firings] and got.engine == "python"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "the python engine does" in warnings[0] and limit in warnings[0]
    engine.release(compiled)


def test_a_request_durable_fails_on_is_answered_by_the_python_engine(caplog):
    """About 64 conditions true at once overflow the native engine's stack: no count predicts it."""
    rules = tuple(ir.Rule(f"r{i}", ir.Compare("urgency", "!=", -i - 1), (ir.Prefer("p", 1),)) for i in range(70))
    with pytest.raises(EngineLimitError, match="error code: 303"):
        strict = strict_engine("durable")
        strict.evaluate(strict.compile(ir.RuleSet(rules)), {"urgency": 3})
    engine = make_engine("durable")
    compiled = engine.compile(ir.RuleSet(rules))
    with caplog.at_level(logging.WARNING, logger="arbiter.engine"):
        for _ in range(3):
            result = engine.evaluate(compiled, {"urgency": 3})
            assert len(result.firings) == 70 and result.engine == "python"
        assert engine.evaluate(compiled, {}).engine == "python"  # durable-rules is not entered again
    assert len(caplog.records) == 1 and "too many conditions true at once" in caplog.records[0].getMessage()
    engine.release(compiled)
