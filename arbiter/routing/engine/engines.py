"""Which rules engine runs: the interface both engines implement, and the choice between them.

durable-rules (``durable_engine``, the only module importing it) where it imports, else the pure
Python evaluator (``python_engine``); ``configs/routing.yaml`` ``engine:`` or ``ARBITER_ENGINE``
choose. Both share the agenda of :mod:`.semantics`, so they can only differ in matching.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Protocol

from arbiter.dsl import ir
from arbiter.routing.engine.semantics import EngineError, Evaluation


class Engine(Protocol):
    name: str

    def compile(self, ruleset: ir.RuleSet) -> Any: ...

    def evaluate(self, compiled: Any, facts: Mapping[str, Any]) -> Evaluation: ...

    def release(self, compiled: Any) -> None: ...


def durable_available() -> bool:
    try:
        import durable.engine  # noqa: F401
    except ImportError:
        return False
    return True


def make_engine(kind: str = "auto") -> Engine:
    """``auto``: durable-rules where it imports, else the Python evaluator. ``ARBITER_ENGINE``
    overrides ``auto`` (useful to run the same tests on both)."""
    if kind == "auto":
        kind = os.environ.get("ARBITER_ENGINE", "auto")
    if kind == "auto":
        kind = "durable" if durable_available() else "python"
    if kind == "durable":
        if not durable_available():
            raise EngineError("the durable-rules engine is not installed (it does not support Python 3.13+)")
        from arbiter.routing.engine.durable_engine import DurableEngine

        return DurableEngine()
    if kind == "python":
        from arbiter.routing.engine.python_engine import PythonEngine

        return PythonEngine()
    raise EngineError(f"unknown engine '{kind}' (use auto, durable or python)")
