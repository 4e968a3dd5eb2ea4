"""durable-rules' sharp edges, each handled: timers, leaks, sessions, crowded properties, actions."""

from __future__ import annotations

import builtins
import gc
import sys
import threading
import time

import pytest
from arbiter.dsl import ir

from arbiter.routing.engine.durable_engine import COMPILE_TIMEOUT_S
from arbiter.routing.engine.engines import durable_available, make_engine, strict_engine
from arbiter.routing.engine.semantics import ActionError, EngineLimitError

pytestmark = pytest.mark.skipif(not durable_available(), reason="durable-rules not installed")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def small_ruleset(n: int = 20) -> ir.RuleSet:
    rules = [
        ir.Rule(f"r{i}", ir.All((ir.Exists(f"domain.d{i}"), ir.Compare("urgency", ">=", i % 5))), (ir.Prefer("p", 1),))
        for i in range(n)
    ]
    return ir.RuleSet(tuple(rules))


def test_no_timer_threads():
    """durable-rules' host starts its timers (threads that re-arm for ever) when it is made: any
    would be running as soon as the engine exists, so no waiting is needed to see them."""
    before = set(threading.enumerate())
    engine = strict_engine("durable")
    compiled = engine.compile(small_ruleset())
    engine.evaluate(compiled, {"domain.d1": 1, "urgency": 3})
    started = [t.name for t in set(threading.enumerate()) - before]
    assert started == [], f"threads left running: {started}"
    engine.release(compiled)


def registered(compiled) -> bool:
    """Whether durable-rules' host still holds the compiled ruleset (its public lookup raises
    "Ruleset with name ... not found" for a deleted one)."""
    try:
        compiled.host.get_ruleset(compiled.name)
    except Exception as exc:
        if "not found" in str(exc):
            return False
        raise
    return True


def test_released_rulesets_are_deleted_from_durable():
    engine = strict_engine("durable")
    ruleset = small_ruleset()
    compiled = [engine.compile(ruleset) for _ in range(20)]
    assert all(registered(c) for c in compiled)
    for one in compiled:
        engine.evaluate(one, {"domain.d1": 1, "urgency": 3})
        engine.release(one)
    assert not any(registered(c) for c in compiled)


@pytest.mark.perf
def test_500_recompiles_keep_memory_flat(record_property):
    engine = strict_engine("durable")
    ruleset = small_ruleset()
    for _ in range(50):  # warm-up
        engine.release(engine.compile(ruleset))
    gc.collect()
    start = rss_mb()
    for _ in range(500):
        compiled = engine.compile(ruleset)
        engine.evaluate(compiled, {"domain.d1": 1, "urgency": 3})
        engine.release(compiled)
    gc.collect()
    growth = rss_mb() - start
    record_property("rss_growth_mb", round(growth, 1))
    assert growth < 20, f"RSS grew {growth:.1f} MB over 500 recompiles"


def test_garbage_collected_rules_are_deleted():
    engine = strict_engine("durable")
    compiled = engine.compile(small_ruleset())
    host, name = compiled.host, compiled.name
    del compiled
    gc.collect()
    engine.release(engine.compile(small_ruleset(2)))  # deferred deletions happen on the next call
    with pytest.raises(Exception, match=f"Ruleset with name {name} not found"):
        host.get_ruleset(name)


def test_more_evaluations_than_durables_session_limit():
    engine = strict_engine("durable")
    compiled = engine.compile(small_ruleset(5))
    for i in range(2100):
        result = engine.evaluate(compiled, {"domain.d1": 1, "urgency": i % 5})
        assert [f.rule for f in result.firings] == (["r1"] if i % 5 >= 1 else [])
    for _ in range(1100):  # no rule matches: no session may be left behind either
        assert engine.evaluate(compiled, {"urgency": 9}).firings == ()
    assert engine.evaluate(compiled, {"domain.d2": 1, "urgency": 4}).firings[0].rule == "r2"
    engine.release(compiled)


def test_crowded_property_is_refused_quickly_not_hung():
    """600 distinct conditions under one would hang durable's compiler: refused by the count first."""
    rules = tuple(
        ir.Rule(f"r{i}", ir.All((ir.Exists("domain.backend"), ir.Compare("urgency", "==", i))), (ir.Prefer("p", 1),))
        for i in range(600)
    )
    engine = strict_engine("durable")
    start = time.monotonic()
    with pytest.raises(EngineLimitError, match="at most 251 distinct conditions; rule 'r250'"):
        engine.compile(ir.RuleSet(rules))
    assert time.monotonic() - start < COMPILE_TIMEOUT_S


def test_action_exceptions_surface():
    engine = strict_engine("durable")
    compiled = engine.compile(small_ruleset(3))
    compiled.collected = _Exploding()
    with pytest.raises(ActionError, match="rule 'r1' failed while firing: RuntimeError: boom"):
        engine.evaluate(compiled, {"domain.d1": 1, "urgency": 3})
    engine.release(compiled)


class _Exploding(dict):
    def setdefault(self, *args, **kwargs):
        raise RuntimeError("boom")


def test_auto_falls_back_to_python_when_durable_does_not_import(monkeypatch):
    real_import = builtins.__import__

    def no_durable(name, *args, **kwargs):
        if name == "durable" or name.startswith("durable."):
            raise ImportError("No module named 'durable'")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "durable" or m.startswith("durable.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_durable)
    monkeypatch.delenv("ARBITER_ENGINE", raising=False)
    assert make_engine("auto").name == "python"
    with pytest.raises(Exception, match="not installed"):
        strict_engine("durable")
