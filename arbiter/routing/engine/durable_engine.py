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
- The native engine has fixed-size tables (:mod:`arbiter.dsl.engine_limits`, measured): a rule
  set past them is refused here before durable-rules sees it (past one of them its compiler
  hangs), and any other refusal, or a request the native engine fails, is an
  :class:`EngineLimitError` naming durable-rules' error code, on which :mod:`.engines` runs the
  Python engine instead. The native compile also runs under a watchdog.
- Exceptions in actions are swallowed into the session state: our actions only record the
  rule, and any exception they meet is re-raised as :class:`ActionError`.
"""

from __future__ import annotations

import itertools
import re
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import durable_rules_engine
from durable import engine as durable_engine

from arbiter.dsl import ir
from arbiter.dsl.engine_limits import crossing
from arbiter.routing.engine.semantics import (
    ActionError,
    CompileError,
    EngineLimitError,
    Evaluation,
    Memory,
    Predicate,
    leaf,
    run_agenda,
)

COMPILE_TIMEOUT_S = 30.0
ALWAYS = "always"
SENTINEL = "arbiter_sentinel"
# durable-rules' error codes (its rules.h) that a large or busy rule set meets, in words.
NATIVE_ERRORS = {
    106: "too many rules for one network",
    107: "too many rules with the same condition with an `or`",
    108: "too many rules with the very same condition",
    302: "too many distinct conditions for one fact",
    303: "too many conditions true at once",
    309: "its session was lost after a failed match",
}
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


@dataclass
class DurableRules:
    ruleset: ir.RuleSet
    name: str
    host: _QuietHost
    leaves: tuple[Predicate, ...]
    collected: dict[str, set[int]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    released: bool = False
    failed: str | None = None  # the native engine failed on a request: it is not entered again


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
        raise EngineLimitError(f"durable-rules did not finish compiling within {COMPILE_TIMEOUT_S:.0f}s")
    if outcome[0] is not None:
        raise EngineLimitError(f"durable-rules refused the rules: {native(outcome[0])}")


def native(exc: BaseException) -> str:
    """A native engine error with the meaning of its code."""
    found = re.search(r"error code: (\d+)", str(exc))
    meaning = NATIVE_ERRORS.get(int(found.group(1))) if found else None
    return f"{exc} ({meaning})" if meaning else str(exc)


def _defer_release(pending: list[str], name: str) -> None:
    """Finalizers run at any allocation, even inside a durable-rules call, where deleting a
    ruleset would corrupt the native engine: only note the name; it is deleted later."""
    pending.append(name)


def _release(host: _QuietHost, name: str, failed: set[str]) -> None:
    ruleset = host._ruleset_directory.pop(name, None)
    if ruleset is None or name in failed:  # a failed native ruleset aborts the process when deleted
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
        self._failed: set[str] = set()  # rulesets the native engine failed in: left alone, never deleted

    def _collect(self) -> None:
        while self._pending:
            _release(self._host, self._pending.pop(), self._failed)

    def compile(self, ruleset: ir.RuleSet) -> DurableRules:
        index: dict[str, int] = {}
        predicates: list[Predicate] = []
        for rule in ruleset.rules:
            for cond in ir.leaves(rule.when):
                key = repr(cond)
                if key not in index:
                    index[key] = len(predicates)
                    predicates.append(leaf(cond))
        exprs = [_nnf(rule.when, index) for rule in ruleset.rules]
        crossed = crossing(ruleset.rules)
        if crossed is not None:
            rule = ruleset.rules[crossed.index]
            where = f"{rule.source.path}:{rule.source.line}"
            raise EngineLimitError(f"{crossed.limit}; rule '{rule.name}' ({where}) is past that")
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
            except Exception as exc:  # the native engine's own failure: its limits, never ours
                # Its state is unknown now (deleting the session or the ruleset can abort the
                # process): these rules are not run by it again, nor deleted.
                compiled.failed = f"durable-rules failed on a request: {native(exc)}"
                self._failed.add(compiled.name)
                raise EngineLimitError(compiled.failed) from exc
            self._host.delete_state(compiled.name, sid)
            error = compiled.errors.pop(sid, None)
            matched = compiled.collected.pop(sid, set())
        if error is not None:
            raise error
        return matched

    def evaluate(self, compiled: DurableRules, facts: Mapping[str, Any]) -> Evaluation:
        if compiled.released:
            raise CompileError("these rules were released; compile them again")
        if compiled.failed:
            raise EngineLimitError(compiled.failed)
        if not compiled.ruleset.rules:
            return run_agenda((), facts, lambda get: set(), self.name, compiled.ruleset.hash)
        return run_agenda(
            compiled.ruleset.rules, facts, lambda get: self._match(compiled, get), self.name, compiled.ruleset.hash
        )

    def release(self, compiled: DurableRules) -> None:
        with self._lock:
            compiled.released = True
            _release(self._host, compiled.name, self._failed)
            self._collect()
