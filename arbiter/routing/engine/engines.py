"""Which rules engine runs: the interface both engines implement, and the choice between them.

durable-rules (``durable_engine``, the only module importing it) where it imports, else the pure
Python evaluator (``python_engine``); ``configs/routing.yaml`` ``engine:`` or ``ARBITER_ENGINE``
choose. Both share the agenda of :mod:`.semantics`, so they can only differ in matching.

durable-rules has fixed-size tables (:mod:`arbiter.dsl.engine_limits`). A rule set past them, or
a request its native engine fails on, must not cost a request: :class:`FallbackEngine` runs the
Python engine instead, with the same results, and logs why once per reason.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from arbiter.dsl import ir
from arbiter.routing.engine.semantics import EngineError, EngineLimitError, Evaluation

log = logging.getLogger("arbiter.engine")


class Engine(Protocol):
    name: str

    def compile(self, ruleset: ir.RuleSet) -> Any: ...

    def evaluate(self, compiled: Any, facts: Mapping[str, Any]) -> Evaluation: ...

    def release(self, compiled: Any) -> None: ...


@dataclass
class Guarded:
    """Rules compiled by the first engine, or by the fallback when the first cannot hold them."""

    ruleset: ir.RuleSet
    primary: Any | None  # None: the first engine refused the rules
    fallback: Any | None = None  # compiled when first needed
    limit: str | None = None  # why the fallback runs these rules (None: the first engine does)


class FallbackEngine:
    """The first engine while it can, the Python engine past its limits; warns once per reason."""

    def __init__(self, primary: Engine, fallback: Engine):
        self.primary, self.fallback = primary, fallback
        self.name = primary.name
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def _warn(self, reason: str) -> None:
        with self._lock:
            if reason in self._warned:
                return
            self._warned.add(reason)
        message = "the %s engine cannot run these rules, the %s engine does: %s"
        log.warning(message, self.name, self.fallback.name, reason)

    def compile(self, ruleset: ir.RuleSet) -> Guarded:
        try:
            return Guarded(ruleset, self.primary.compile(ruleset))
        except EngineLimitError as exc:
            self._warn(str(exc))
            return Guarded(ruleset, None, self.fallback.compile(ruleset), str(exc))

    def evaluate(self, compiled: Guarded, facts: Mapping[str, Any]) -> Evaluation:
        if compiled.primary is not None and compiled.limit is None:
            try:
                return self.primary.evaluate(compiled.primary, facts)
            except EngineLimitError as exc:  # the first engine does not run these rules again
                self._warn(str(exc))
                compiled.limit = str(exc)
        if compiled.fallback is None:
            compiled.fallback = self.fallback.compile(compiled.ruleset)
        return self.fallback.evaluate(compiled.fallback, facts)

    def release(self, compiled: Guarded) -> None:
        if compiled.primary is not None:
            self.primary.release(compiled.primary)
        if compiled.fallback is not None:
            self.fallback.release(compiled.fallback)


def durable_available() -> bool:
    try:
        import durable.engine  # noqa: F401
    except ImportError:
        return False
    return True


def make_engine(kind: str = "auto") -> Engine:
    """``auto``: durable-rules where it imports, else the Python evaluator. ``ARBITER_ENGINE``
    overrides ``auto`` (useful to run the same tests on both). durable-rules always comes with
    the Python engine behind it for what it cannot hold (:class:`FallbackEngine`)."""
    if kind == "auto":
        kind = os.environ.get("ARBITER_ENGINE", "auto")
    if kind == "auto":
        kind = "durable" if durable_available() else "python"
    if kind == "durable":
        if not durable_available():
            raise EngineError("the durable-rules engine is not installed (it does not support Python 3.13+)")
        from arbiter.routing.engine.durable_engine import DurableEngine
        from arbiter.routing.engine.python_engine import PythonEngine

        return FallbackEngine(DurableEngine(), PythonEngine())
    if kind == "python":
        from arbiter.routing.engine.python_engine import PythonEngine

        return PythonEngine()
    raise EngineError(f"unknown engine '{kind}' (use auto, durable or python)")


def strict_engine(kind: str) -> Engine:
    """One engine alone, without a fallback: for comparing the engines and testing their edges."""
    engine = make_engine(kind)
    return engine.primary if isinstance(engine, FallbackEngine) else engine
