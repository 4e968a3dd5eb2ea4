"""The durable-rules matcher. This is the only module that imports durable-rules.

How it is driven, and the library's sharp edges it handles:

- Each distinct leaf condition (a comparison, a regex on the text, a file glob) becomes a
  boolean property ``p<n>`` of one fact; the rule's and/or/not structure becomes a durable-rules
  condition over those properties (negations pushed to the leaves). durable-rules' Rete network
  then decides which rules match; leaves are computed in Python because durable's own regex and
  missing-property semantics differ from ours.
- ``engine.Host`` starts two timer threads that run forever: :class:`_QuietHost` never starts
  them, and actions run synchronously inside ``assert_fact``.
- A registered ruleset cannot be replaced and leaks unless deleted: every compile registers a
  uniquely named ruleset and :meth:`DurableEngine.release` (or garbage collection) deletes it.
- At most 1024 sessions may be live: every match uses its own ``sid`` and deletes it at once.
- More than 512 rules testing one property make the native compiler hang: the count is checked
  before compiling, and the native compile runs under a watchdog so a caller never hangs.
- Exceptions in actions are swallowed into the session state: our actions only record the
  rule, and any exception they meet is re-raised as :class:`ActionError`.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import durable_rules_engine
from durable import engine as durable_engine

from arbiter.dsl import ir
from arbiter.routing.engine.semantics import (
    ActionError,
    CompileError,
    Evaluation,
    Memory,
    Predicate,
    leaf,
    leaves,
    run_agenda,
)

MAX_RULES_PER_PROPERTY = 512
COMPILE_TIMEOUT_S = 30.0
ALWAYS = "always"
SENTINEL = "arbiter_sentinel"
# Short names: the native engine keeps ruleset and session names in small fixed buffers.
_NAMES = itertools.count()


class _QuietHost(durable_engine.Host):
    """A host without the timer threads: we call it synchronously and need no timers."""

    def _run(self) -> None:
        return None


def _nnf(cond: ir.Condition, index: dict[str, int], positive: bool = True) -> dict[str, Any]:
    """durable-rules JSON for a condition, negations pushed down to leaf properties."""
    if isinstance(cond, ir.Not):
        return _nnf(cond.item, index, not positive)
    if isinstance(cond, (ir.All, ir.Any_)):
        if not cond.items:
            truth = isinstance(cond, ir.All) == positive
            return {ALWAYS: truth}
        conjunction = isinstance(cond, ir.All) == positive
        parts = [_nnf(c, index, positive) for c in cond.items]
        if len(parts) == 1:
            return parts[0]
        return {"$and" if conjunction else "$or": parts}
    return {f"p{index[repr(cond)]}": positive}


def _properties(expr: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for key, value in expr.items():
        if key in ("$and", "$or"):
            for part in value:
                out |= _properties(part)
        else:
            out.add(key)
    return out


@dataclass
class DurableRules:
    ruleset: ir.RuleSet
    name: str
    host: _QuietHost
    leaves: tuple[Predicate, ...]
    collected: dict[str, set[int]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    released: bool = False


def _sentinel(c: Any) -> None:
    """Matches every fact so that none is left unhandled; records nothing."""


def _recorder(ref: Callable[[], DurableRules | None], index: int, name: str) -> Callable[[Any], None]:
    """The action of rule ``index``: note that it matched. It holds the rules weakly, so the
    host's reference to the action does not keep released rules alive."""

    def action(c: Any) -> None:
        rules = ref()
        if rules is None:
            return
        sid = None
        try:
            sid = c.s.sid
            rules.collected.setdefault(sid, set()).add(index)
        except BaseException as exc:  # surfaced by _match(), never left in durable's state
            rules.errors[str(sid)] = ActionError(name, exc)

    return action


def _register(host: _QuietHost, definition: dict[str, Any]) -> None:
    """Register with a watchdog: the native compiler must not hang the caller."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            host.register_rulesets(definition)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=work, name="arbiter-durable-compile", daemon=True)
    worker.start()
    worker.join(COMPILE_TIMEOUT_S)
    if not outcome:
        raise CompileError(f"durable-rules did not finish compiling within {COMPILE_TIMEOUT_S:.0f}s")
    if outcome[0] is not None:
        raise CompileError(f"durable-rules refused the rules: {outcome[0]}")


def _defer_release(pending: list[str], name: str) -> None:
    """Finalizers run at any allocation, even inside a durable-rules call, where deleting a
    ruleset would corrupt the native engine: only note the name; it is deleted later."""
    pending.append(name)


def _release(host: _QuietHost, name: str) -> None:
    ruleset = host._ruleset_directory.pop(name, None)
    if ruleset is None:
        return
    if ruleset in host._ruleset_list:
        host._ruleset_list.remove(ruleset)
    durable_rules_engine.delete_ruleset(ruleset._handle)


class DurableEngine:
    name = "durable"

    def __init__(self) -> None:
        self._host = _QuietHost()
        self._lock = threading.RLock()  # the native engine is not safe to enter from two threads
        self._pending: list[str] = []
        self._sids = itertools.count()

    def _collect(self) -> None:
        while self._pending:
            _release(self._host, self._pending.pop())

    def compile(self, ruleset: ir.RuleSet) -> DurableRules:
        index: dict[str, int] = {}
        predicates: list[Predicate] = []
        for rule in ruleset.rules:
            for cond in leaves(rule.when):
                key = repr(cond)
                if key not in index:
                    index[key] = len(predicates)
                    predicates.append(leaf(cond))
        exprs = [_nnf(rule.when, index) for rule in ruleset.rules]
        counts = Counter(p for e in exprs for p in _properties(e))
        crowded = [(p, n) for p, n in counts.items() if n > MAX_RULES_PER_PROPERTY]
        if crowded:
            prop, count = crowded[0]
            raise CompileError(
                f"{count} rules test the same condition ({prop}); durable-rules hangs past "
                f"{MAX_RULES_PER_PROPERTY}. Merge those rules or use the python engine."
            )
        name = f"arb{next(_NAMES)}"
        compiled = DurableRules(ruleset, name, self._host, tuple(predicates))
        ref = weakref.ref(compiled)
        rules = {
            f"r{i}": {"all": [{"m": expr}], "run": _recorder(ref, i, rule.name)}
            for i, (rule, expr) in enumerate(zip(ruleset.rules, exprs))
        }
        # Every fact must be handled: durable-rules keeps a session for an unhandled fact, and
        # deleting such a session can abort the native engine. A sentinel rule matches them all.
        rules[SENTINEL] = {"all": [{"m": {ALWAYS: True}}], "run": _sentinel}
        definition = {name: rules}
        if ruleset.rules:
            with self._lock:
                self._collect()
                _register(self._host, definition)
            weakref.finalize(compiled, _defer_release, self._pending, name)
        return compiled

    def _match(self, compiled: DurableRules, get: Memory) -> set[int]:
        fact: dict[str, Any] = {f"p{i}": bool(p(get)) for i, p in enumerate(compiled.leaves)}
        fact[ALWAYS] = True
        sid = f"s{next(self._sids)}"
        fact["sid"] = sid
        with self._lock:
            try:
                self._host.assert_fact(compiled.name, fact)
            finally:
                self._host.delete_state(compiled.name, sid)
            error = compiled.errors.pop(sid, None)
            matched = compiled.collected.pop(sid, set())
        if error is not None:
            raise error
        return matched

    def evaluate(self, compiled: DurableRules, facts: Mapping[str, Any]) -> Evaluation:
        if compiled.released:
            raise CompileError("these rules were released; compile them again")
        if not compiled.ruleset.rules:
            return run_agenda((), facts, lambda get: set(), self.name, compiled.ruleset.hash)
        return run_agenda(
            compiled.ruleset.rules, facts, lambda get: self._match(compiled, get), self.name, compiled.ruleset.hash
        )

    def release(self, compiled: DurableRules) -> None:
        with self._lock:
            compiled.released = True
            _release(self._host, compiled.name)
            self._collect()
