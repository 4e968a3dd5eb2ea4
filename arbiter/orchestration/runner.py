"""One run of a chain or a collaboration plan: which step goes next, and what its end means.

The semantics (dsl/REFERENCE.md "Chains" says the same for rule authors):

- **sequential**: steps one after another; a step whose ``when`` does not hold is ``skipped``; an
  ``if``/``else`` runs the branch its condition picks. A step that fails for good (after its own
  tries, and the dispatcher's retries and fallbacks) fails the run; the steps after it do not run.
- **saga**: sequential; when a step fails for good, the steps that completed are compensated in
  reverse order, each compensation tried up to ``COMPENSATION_TRIES`` times. The run ends
  ``compensated``; if a compensation still fails it ends ``compensation-failed`` and the broker
  keeps a dead letter of it: never done silently. Cancelling a saga compensates it too.
- **parallel**: every step starts at once; the chain's timeout bounds the whole group. With
  ``wait-all`` (the default) every step runs to its end and the run fails afterwards if any did;
  with ``fail-fast`` the run fails at the first failure and the steps still running are
  abandoned (their late answers are ignored).
- **plan** (a routed request's collaboration plan): a phase starts when the phases it depends on
  completed; phases without an order between them run at once.
- The chain's ``timeout`` ends a run that is not done by then as ``timed-out`` (a saga is
  compensated first).

A run is plain data driven by its owner, the broker: it asks the owner to send a step
(:meth:`RunHost.send`) and hears the outcome (:meth:`ChainRun.step_done`); every change of state
goes to :meth:`RunHost.changed` (the broker stores and publishes it). A run rebuilt from its
stored rows after a restart goes on from where they say, sending again, with the same
idempotency key, a step that was in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from arbiter.dsl.chains import BranchPlan, ChainPlan, PlanItem, StepPlan
from arbiter.orchestration import values

COMPENSATION_TRIES = 3
DONE = ("completed", "skipped")
ENDED = ("completed", "failed", "cancelled", "timed-out", "compensated", "compensation-failed")


@dataclass
class StepState:
    """One step (or one compensation) of a run, as stored and shown."""

    name: str
    order: int
    plugin: str
    command: str
    what: str = "step"  # step | compensation
    status: str = "pending"
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    tries: int = 0
    ms: float = 0.0
    started: float | None = None
    ended: float | None = None

    @property
    def key(self) -> str:
        return self.name if self.what == "step" else f"{self.name}/undo"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "what": self.what,
            "status": self.status,
            "plugin": self.plugin,
            "command": self.command,
            "tries": self.tries,
            "ms": round(self.ms, 1),
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True)
class Outcome:
    """How a step's request ended, as the broker's dispatch reports it."""

    ok: bool
    result: Any = None
    error: str | None = None  # "CODE: message"
    tries: int = 1
    plugin: str | None = None  # the plugin that answered (a fallback's name after a fallback)


class RunHost(Protocol):
    """What a run asks of the broker."""

    def send(self, run: ChainRun, step: StepState, timeout_ms: int, retries: int | None) -> None:
        """Send ``step`` (its plugin, command, arguments) with the key ``run.key(step)``; report to
        :meth:`ChainRun.step_done` when it ends."""
        ...

    def abandon(self, run: ChainRun, step: StepState) -> None:
        """Stop waiting for a step still in flight (its answer, if one comes, is ignored)."""
        ...

    def changed(self, run: ChainRun, step: StepState | None, event: str) -> None:
        """The run (``step`` None) or one of its steps changed: keep it and announce ``event``."""
        ...

    def lost(self, run: ChainRun, step: StepState) -> None:
        """A compensation failed for good: keep it where an operator will see it (a dead letter)."""
        ...


@dataclass
class ChainRun:
    """A run of ``plan`` with ``params``; see the module docstring for the semantics."""

    run_id: str
    plan: ChainPlan
    params: dict[str, Any]
    host: RunHost
    what: str = "chain"  # chain | plan
    status: str = "pending"
    error: str | None = None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    resumed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # kept with the run (request id, trace, ...)
    steps: dict[str, StepState] = field(default_factory=dict)  # by key, in the order they started
    results: dict[str, Any] = field(default_factory=dict)  # completed steps' results, by step name
    _queue: list[PlanItem] = field(default_factory=list)  # what a sequential run has still to do
    _in_flight: set[str] = field(default_factory=set)
    _undo: list[str] = field(default_factory=list)  # completed saga steps, to compensate in reverse

    # -- identity ----------------------------------------------------------------------------

    def key(self, step: StepState) -> str:
        """The step's idempotency key: its messageId, the same on every try and after a resume."""
        return f"{self.meta.get('keyBase', self.run_id)}:{step.key}"

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def on_failure(self) -> str:
        return getattr(self.plan, "on_failure", "wait-all")

    @property
    def ended_ok(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict[str, Any]:
        last = next((s for s in reversed(self.steps.values()) if s.status == "completed"), None)
        return {
            "runId": self.run_id,
            "chain": self.plan.name,
            "what": self.what,
            "status": self.status,
            "params": self.params,
            "result": last.result if last and self.status == "completed" else None,
            "results": dict(self.results),
            "error": self.error,
            "resumed": self.resumed,
            "steps": [s.to_json() for s in self.steps.values()],
            **{k: v for k, v in self.meta.items() if k in ("traceId", "requestId")},
        }

    # -- starting --------------------------------------------------------------------------

    def start(self) -> None:
        self._set("running", "started")
        if self.kind == "parallel":
            for item in self.plan.items:
                self._take(item)
            self._check_parallel_end()
        elif self.what == "plan":
            self._start_ready_phases()
        else:
            self._queue = list(self.plan.items)
            self._advance()

    def resume(self) -> None:
        """Go on after a restart or a failure: completed steps keep their results; a step that
        was in flight, failed or never started runs again, with the same key. A saga that was
        compensating (or whose compensation failed) goes on compensating: it never runs forward
        once a step of it was undone."""
        self.resumed += 1
        for state in list(self.steps.values()):
            if state.status == "completed" and state.what == "step":
                self.results[state.name] = state.result
        undone = {s.name for s in self.steps.values() if s.what == "compensation" and s.status == "compensated"}
        done = sorted((s for s in self.steps.values() if s.what == "step" and s.status == "completed"), key=_order)
        self._undo = [s.name for s in done if s.name not in undone]
        self._in_flight.clear()
        if self.status in ("compensating", "compensation-failed"):
            self._set("compensating", "compensating")
            self._compensate_next()
            return
        self.error = None
        self.start()

    # -- scheduling ------------------------------------------------------------------------

    def _advance(self) -> None:
        """Sequential runs: take items until one is sent, or the run ends."""
        while self._queue and self.status == "running":
            item = self._queue.pop(0)
            if isinstance(item, BranchPlan):
                branch = item.then if self._holds(item.when) else item.otherwise
                self._queue[:0] = list(branch)
                continue
            if self._take(item):
                return
        if self.status == "running" and not self._in_flight:
            self._end("completed", None)

    def _take(self, step: StepPlan | BranchPlan) -> bool:
        """Start ``step`` unless it is done already or its condition says to skip it; True when
        it was sent. A parallel run's branches are taken as the condition picks, at once."""
        if isinstance(step, BranchPlan):
            for item in step.then if self._holds(step.when) else step.otherwise:
                self._take(item)
            return False
        done = self.steps.get(step.name)
        if done is not None and done.status in DONE:
            return False
        state = self._state(step, "step", step.command)
        if step.when is not None and not self._holds(step.when):
            state.status = "skipped"
            self.host.changed(self, state, "step-skipped")
            return False
        try:
            state.args = values.arguments(step.args, self.params, self.results)
        except values.ReferenceError_ as exc:
            self._failed(state, f"BAD_REFERENCE: {exc}")
            return False
        self._send(state, step.timeout_ms, step.retry)
        return True

    def _holds(self, condition: Any) -> bool:
        return values.holds(condition, self.params, self.results)

    def _state(self, step: StepPlan, what: str, command: str) -> StepState:
        key = step.name if what == "step" else f"{step.name}/undo"
        state = self.steps.get(key)
        if state is None:
            state = self.steps[key] = StepState(step.name, len(self.steps), step.plugin, command, what)
        return state

    def _send(self, state: StepState, timeout_ms: int, retries: int) -> None:
        state.status, state.started, state.error = "running", time.time(), None
        self._in_flight.add(state.key)
        self.host.changed(self, state, "compensating" if state.what == "compensation" else "step-started")
        self.host.send(self, state, timeout_ms, retries)

    # -- what a step's end means -------------------------------------------------------------

    def step_done(self, key: str, outcome: Outcome) -> None:
        """A step's request ended; late answers (a run that ended, a step abandoned) are ignored."""
        state = self.steps.get(key)
        if state is None or key not in self._in_flight:
            return
        self._in_flight.discard(key)
        state.tries += outcome.tries
        state.ended = time.time()
        state.ms = (state.ended - (state.started or state.ended)) * 1000
        if outcome.plugin:
            state.plugin = outcome.plugin
        if state.what == "compensation":
            self._compensation_done(state, outcome)
        elif outcome.ok:
            self._completed(state, outcome.result)
        else:
            self._failed(state, outcome.error or "ERROR")

    def _completed(self, state: StepState, result: Any) -> None:
        state.status, state.result = "completed", result
        self.results[state.name] = result
        self._undo.append(state.name)
        self.host.changed(self, state, "step-completed")
        if self.status != "running":
            return
        if self.kind == "parallel":
            self._check_parallel_end()
        elif self.what == "plan":
            self._start_ready_phases()
        else:
            self._advance()

    def _failed(self, state: StepState, error: str) -> None:
        state.status, state.error = "failed", error
        self.host.changed(self, state, "step-failed")
        if self.status != "running":
            return
        if self.kind == "parallel" and self.on_failure == "wait-all":
            self._check_parallel_end()
            return
        self._give_up(f"step {state.name} failed: {error}", "failed")

    def _check_parallel_end(self) -> None:
        if self._in_flight or self.status != "running":
            return
        failed = [s for s in self.steps.values() if s.status == "failed"]
        if failed:
            self._end("failed", "; ".join(f"step {s.name} failed: {s.error}" for s in failed))
        else:
            self._end("completed", None)

    def _give_up(self, error: str, status: str) -> None:
        """End the run as ``status``: abandon what is in flight; a saga compensates first."""
        for key in list(self._in_flight):
            self._in_flight.discard(key)
            state = self.steps[key]
            state.status = "cancelled"
            self.host.abandon(self, state)
            self.host.changed(self, state, "step-cancelled")
        self.error = error
        if self.kind == "saga" and self._undo:
            self._set("compensating", "compensating")
            self._compensate_next()
        else:
            self._end(status, error)

    def fail_timeout(self) -> None:
        if self.status == "running":
            self._give_up(f"the chain did not finish within {self.plan.timeout_ms} ms", "timed-out")

    def cancel(self) -> None:
        if self.status in ("running", "pending"):
            self._give_up("cancelled", "cancelled")

    # -- compensation ------------------------------------------------------------------------

    def _compensate_next(self) -> None:
        while self._undo:
            name = self._undo.pop()
            step = _find(self.plan.items, name)
            if step is None or not step.compensate:
                continue
            state = self._state(step, "compensation", step.compensate)
            try:
                state.args = values.arguments(step.compensate_args, self.params, self.results)
            except values.ReferenceError_ as exc:
                state.status, state.error = "compensation-failed", f"BAD_REFERENCE: {exc}"
                self.host.changed(self, state, "compensation-failed")
                self.host.lost(self, state)
                continue
            self._send(state, step.timeout_ms, COMPENSATION_TRIES - 1)
            return
        lost = [s for s in self.steps.values() if s.what == "compensation" and s.status == "compensation-failed"]
        self._end("compensation-failed" if lost else "compensated", self.error)

    def _compensation_done(self, state: StepState, outcome: Outcome) -> None:
        if outcome.ok:
            state.status, state.result = "compensated", outcome.result
            self.host.changed(self, state, "compensated")
        else:
            state.status, state.error = "compensation-failed", outcome.error or "ERROR"
            self.host.changed(self, state, "compensation-failed")
            self.host.lost(self, state)
        self._compensate_next()

    # -- collaboration plans -------------------------------------------------------------------

    def _start_ready_phases(self) -> None:
        """A phase whose dependencies completed starts; the run ends when every phase has."""
        phases = [item for item in self.plan.items if isinstance(item, StepPlan)]
        for step in phases:
            state = self.steps.get(step.name)
            if state is not None and state.status != "pending":
                continue
            needs = self.meta.get("dependencies", {}).get(step.name, ())
            if all(self.steps.get(n) is not None and self.steps[n].status in DONE for n in needs):
                self._take(step)
        if self.status == "running" and not self._in_flight:
            failed = [s for s in self.steps.values() if s.status == "failed"]
            self._end("failed" if failed else "completed", self.error)

    # -- the run's own state --------------------------------------------------------------------

    def _set(self, status: str, event: str) -> None:
        self.status = status
        self.host.changed(self, None, event)

    def _end(self, status: str, error: str | None) -> None:
        self.ended, self.error = time.time(), error
        self._set(status, "completed" if status == "completed" else "failed")


def _order(state: StepState) -> int:
    return state.order


def _find(items: tuple[PlanItem, ...] | list[PlanItem], name: str) -> StepPlan | None:
    for item in items:
        if isinstance(item, StepPlan) and item.name == name:
            return item
        if isinstance(item, BranchPlan):
            found = _find(item.then, name) or _find(item.otherwise, name)
            if found is not None:
                return found
    return None


def restore(run: ChainRun, rows: list[Mapping[str, Any]]) -> ChainRun:
    """Put the steps a stored run had back into ``run`` (before :meth:`ChainRun.resume`)."""
    for row in rows:
        meta = row.get("meta") or {}
        state = StepState(
            row["name"],
            row.get("order", 0),
            row.get("plugin") or "",
            row.get("command") or "",
            row.get("what") or "step",
            row["status"],
            meta.get("args") or {},
            row.get("result"),
            row.get("error"),
            meta.get("tries", 0),
            meta.get("ms", 0.0),
        )
        run.steps[state.key] = state
    return run
