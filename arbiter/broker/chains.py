"""Runs of chains and collaboration plans on the broker: each step goes to its plugin through the
same dispatch as ``arbiter.route`` (retries, circuit breakers, fallbacks that have the step's
command), every change of a run is stored in order with the decision log and announced on
``orchestration/chain/<name>/<run>/<event>``, and runs a stop cut short go on when the broker
starts again, sending a step that was in flight again with the same idempotency key (the run id
and the step's name, as the envelope's ``messageId``), so an idempotent worker runs it once.

What a run means is :mod:`arbiter.orchestration.runner`; this module is its owner on the loop
thread.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import orjson

from arbiter.broker import messages as svc
from arbiter.broker import tracing
from arbiter.broker.decision_cache import Decided
from arbiter.broker.dispatch import Dispatcher
from arbiter.broker.metrics import Meter
from arbiter.broker.routed import Routed
from arbiter.broker.run_starts import RunStarts
from arbiter.dsl.chains import ChainPlan
from arbiter.orchestration.runner import ChainRun, Outcome, StepState, restore
from arbiter.project.model import Plugin
from arbiter.store import decisions as record
from arbiter.store.models import ordered_id
from arbiter.wire import envelope as env
from arbiter.wire import trace
from arbiter.wire.trace import TraceContext

log = logging.getLogger("arbiter.broker")

CHAIN_SERVICE = b"arbiter.chain"
NO_ROW = record.RowTemplate("", (), ())  # a step is recorded with its run, not in the decision log
RESUMABLE = ("pending", "running", "compensating", "failed", "cancelled", "timed-out")


class ChainsHost(Protocol):
    """What the runs ask of the broker."""

    dispatcher: Dispatcher
    counters: Counter[str]
    metrics: Meter
    telemetry: Any  # arbiter.telemetry.otel.Spans when spans are exported, else None

    @property
    def plugins(self) -> Mapping[str, Plugin]: ...

    def publish(self, topic: str, data: Mapping[str, Any]) -> None: ...

    def wants(self, topic: str) -> bool: ...

    def keep_task(self, row: Mapping[str, Any]) -> None:
        """Store a run's or a step's row (through the recorder, in order)."""
        ...

    def keep_letter(self, service: str, body: bytes, reason: str, detail: str, message_id: str) -> None: ...

    def call_at(self, when: float, action: Callable[[], None]) -> None: ...

    def post(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the loop thread soon; safe from any thread."""
        ...


@dataclass
class InFlight:
    run: ChainRun
    key: str
    routed: Routed
    span: tracing.Span | None = None  # the step's span, its tries' parent


class ChainDesk:
    """Every run in flight on this broker, by id; the loop thread's alone."""

    def __init__(self, host: ChainsHost):
        self.host = host
        self.runs: dict[str, ChainRun] = {}
        self.steps: dict[str, InFlight] = {}  # by step key (the messageId)
        self.waiting: dict[str, list[Callable[[ChainRun], None]]] = {}
        self.detached = False
        self.owner: str | None = None  # on a store shared by brokers: the name its runs are leased to
        self.lease_s = 0.0
        self.leases: Any = None  # arbiter.broker.leases.RunLeases, renewing and taking over off the loop
        self.starts = RunStarts(self, host.post)  # runs by the messageId of the request that started them
        self.message_ids: dict[str, str] = {}  # run id -> that messageId, written with the run's rows

    def detach(self) -> None:
        """The broker is stopping: runs stay as they are stored, to go on when it starts again;
        the steps' answers (or SHUTTING_DOWN) no longer move them, and who waits hears so now."""
        for run in [r for r in self.runs.values() if r.what == "plan"]:
            run.cancel()  # a plan answers its client: it cannot go on after a restart
        self.detached = True
        self.starts.close()
        for run_id, waiters in list(self.waiting.items()):
            run = self.runs.get(run_id)
            for then in waiters if run is not None else ():
                then(run)
        self.waiting.clear()

    def resume_stored(self, stored: list[Mapping[str, Any]], plans: Mapping[str, ChainPlan]) -> None:
        """At start: go on with the runs a stop cut short."""
        for row in stored:
            if row["id"] in self.runs:
                continue  # already going on here
            plan = plans.get(row["name"])
            if plan is None or row.get("what") != "chain":
                log.warning("run %s of %s cannot go on: the chain is no longer defined", row["id"], row["name"])
                continue
            log.info("resuming run %s of %s", row["id"], row["name"])
            self.resume(row, plan)

    # -- starting, resuming, cancelling -------------------------------------------------------

    def start(
        self,
        plan: ChainPlan,
        params: Mapping[str, Any],
        *,
        what: str = "chain",
        meta: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> ChainRun:
        """Start a run; ``message_id``, the request's that started it, is stored with the run."""
        run = ChainRun(f"run_{ordered_id()}", plan, dict(params), self, what, meta=meta or {})
        if message_id:
            self.message_ids[run.run_id] = message_id
        self._begin(run, run.start)
        return run

    def resume(self, stored: Mapping[str, Any], plan: ChainPlan) -> ChainRun:
        """Go on with a stored run: completed steps stay done, the others run again."""
        meta = dict(stored.get("meta") or {})
        run = ChainRun(stored["id"], plan, meta.pop("params", {}), self, stored.get("what") or "chain")
        run.resumed = meta.pop("resumed", 0)
        run.meta = {k: v for k, v in meta.items() if k not in ("chainKind", "onFailure")}
        run.status, run.error = (
            stored.get("status") or "pending",
            stored.get("error"),
        )  # a compensating saga goes on undoing
        restore(run, stored.get("steps") or [])
        self._begin(run, run.resume)
        return run

    def _begin(self, run: ChainRun, go: Callable[[], None]) -> None:
        self.runs[run.run_id] = run
        self.host.counters["chain-runs"] += 1
        if run.plan.timeout_ms:
            self.host.call_at(time.monotonic() + run.plan.timeout_ms / 1000, run.fail_timeout)
        go()

    def when_done(self, run: ChainRun, then: Callable[[ChainRun], None]) -> None:
        if run.status in ("completed", "failed", "cancelled", "timed-out", "compensated", "compensation-failed"):
            then(run)
        else:
            self.waiting.setdefault(run.run_id, []).append(then)

    def cancel(self, run_id: str) -> ChainRun | None:
        run = self.runs.get(run_id)
        if run is not None:
            run.cancel()
        return run

    # -- RunHost: what a run asks ---------------------------------------------------------------

    def send(self, run: ChainRun, step: StepState, timeout_ms: int, retries: int | None) -> None:
        key = run.key(step)
        now = time.monotonic()
        route = svc.RouteInput(self._envelope(run, step, key, timeout_ms), f"{run.plan.name}: {step.name}",
                               (), None, step.command, step.args)  # fmt: skip
        attributes = {"arbiter.chain": run.plan.name, "arbiter.run_id": run.run_id, "arbiter.step": step.name,
                      "arbiter.plugin": step.plugin, "arbiter.command": step.command}  # fmt: skip
        route.span = tracing.begin_child(self.host.telemetry, "arbiter.chain.step", _trace(run), attributes)
        plan = (step.plugin, *self._fallbacks(step))
        decided = Decided(None, step.plugin, plan, (), b"}", NO_ROW)
        tries = (3 if retries is None else retries) + 1  # None: the plugin's retry policy decides
        patience = timeout_ms / 1000 * tries + 30.0  # every try, and the backoffs between them
        routed = Routed(b"", CHAIN_SERVICE, route, decided, key, False, now + patience, now, None)
        routed.owner = self._ended
        routed.attempt_timeout_s, routed.max_retries = timeout_ms / 1000, retries
        self.steps[key] = InFlight(run, step.key, routed, route.span)
        self.host.dispatcher.start(routed)

    def abandon(self, run: ChainRun, step: StepState) -> None:
        flight = self.steps.pop(run.key(step), None)
        if flight is not None:
            tracing.end(self.host.telemetry, flight.span, {"arbiter.status": "abandoned"}, "abandoned")
        if flight is not None and not flight.routed.done:
            self.host.dispatcher.fail(flight.routed, "CANCELLED", "the run no longer waits for this step", "cancelled")

    def changed(self, run: ChainRun, step: StepState | None, event: str) -> None:
        if self.detached:
            return
        if step is not None:
            self.host.metrics.chain_step(step.status)
        topic = f"orchestration/chain/{run.plan.name}/{run.run_id}/{event}"
        lease = {"owner": self.owner, "lease_s": self.lease_s, "messageId": self.message_ids.get(run.run_id)}
        row = _step_row(run, step) if step is not None else {**_run_row(run), **lease}
        self.host.keep_task({**row, "topic": topic})
        if self.host.wants(topic):
            data = {"runId": run.run_id, "chain": run.plan.name, "status": run.status, "traceId": _trace_id(run)}
            if step is not None:
                data.update(
                    step=step.name, what=step.what, stepStatus=step.status, plugin=step.plugin, error=step.error
                )
            self.host.publish(topic, data)
        if step is None and run.ended is not None:
            self._ended_run(run)

    def lost(self, run: ChainRun, step: StepState) -> None:
        body = orjson.dumps({"runId": run.run_id, "chain": run.plan.name, "step": step.name, "command": step.command,
                             "plugin": step.plugin, "parameters": step.args})  # fmt: skip
        detail = f"compensation {step.command} of step {step.name} failed: {step.error}"
        self.host.keep_letter(CHAIN_SERVICE.decode(), body, "compensation-failed", detail, run.key(step))

    # -- the end of a step, and of a run ---------------------------------------------------------

    def _ended(self, routed: Routed, reply: list[bytes], outcome: dict[str, Any], success: bool) -> None:
        flight = self.steps.pop(routed.request_id, None)
        if flight is not None and self.host.telemetry is not None:
            attributes = {"arbiter.status": outcome.get("status") or "", "arbiter.tries": routed.attempts}
            tracing.end(self.host.telemetry, flight.span, attributes, None if success else outcome.get("status"))
        if flight is None or self.detached:
            return
        flight.run.step_done(flight.key, _outcome(reply, outcome, success))

    def _ended_run(self, run: ChainRun) -> None:
        self.runs.pop(run.run_id, None)
        self.message_ids.pop(run.run_id, None)
        self.host.counters[f"chain-runs-{run.status}"] += 1
        if self.host.wants("orchestration/task-complete"):
            self.host.publish(
                "orchestration/task-complete",
                {
                    "taskId": run.run_id,
                    "chain": run.plan.name,
                    "status": run.status,
                    "error": run.error,
                    "traceId": _trace_id(run),
                },
            )
        for then in self.waiting.pop(run.run_id, []):
            then(run)

    # -- helpers ------------------------------------------------------------------------------

    def _fallbacks(self, step: StepState) -> tuple[str, ...]:
        """The plugin's fallbacks that have the step's command (a fallback runs the same command)."""
        plugin = self.host.plugins.get(step.plugin)
        names = plugin.error_handling.fallback.plugins if plugin else ()
        return tuple(n for n in names if (p := self.host.plugins.get(n)) is not None and p.command(step.command))

    def _envelope(self, run: ChainRun, step: StepState, key: str, timeout_ms: int) -> dict[str, Any]:
        headers = _trace(run).headers()
        return {
            "messageId": key,
            "correlationId": run.run_id,
            "timestamp": env.now_iso(),
            "source": "arbiter",
            "destination": step.plugin,
            "topic": f"plugin/{step.plugin}/request",
            "messageType": "request",
            "priority": env.DEFAULT_PRIORITY,
            "headers": headers,
            "payload": {
                "command": step.command,
                "parameters": step.args,
                "context": {"chain": run.plan.name, "runId": run.run_id, "step": step.name, "what": step.what},
            },
            "metadata": {"retryCount": 0, "timeout": timeout_ms},
        }


def _trace(run: ChainRun) -> TraceContext:
    """The trace of a run's steps, under the run's span (kept in its meta, so a resumed run goes
    on in the same trace); a run kept without one gets a trace of its own, once."""
    if "traceparent" not in run.meta:
        run.meta.update(TraceContext(trace.new_traceparent()).headers())
    return tracing.of_meta(run.meta)


def _trace_id(run: ChainRun) -> str | None:
    value = run.meta.get("traceId")
    return value if isinstance(value, str) else None


def _outcome(reply: list[bytes], outcome: Mapping[str, Any], success: bool) -> Outcome:
    """What a step's routed reply says, for its run."""
    try:
        payload = orjson.loads(reply[0]).get("payload") or {}
    except (orjson.JSONDecodeError, IndexError, AttributeError):
        payload = {}
    tries = int(outcome.get("attempts") or 1)
    if success:
        return Outcome(True, (payload.get("result") or {}).get("result"), None, tries, outcome.get("plugin"))
    error = payload.get("error") or {}
    inner = error.get("plugin") if isinstance(error.get("plugin"), dict) else None
    code, message = (inner or error).get("code") or "ERROR", (inner or error).get("message") or ""
    return Outcome(False, None, f"{code}: {message}", tries, outcome.get("plugin"))


def _run_row(run: ChainRun) -> dict[str, Any]:
    meta = {"params": run.params, "chainKind": run.plan.kind, "resumed": run.resumed, **run.meta}
    if run.plan.kind == "parallel":
        meta["onFailure"] = run.on_failure
    return {
        "id": run.run_id,
        "run": None,
        "name": run.plan.name,
        "what": run.what,
        "status": run.status,
        "order": 0,
        "result": run.to_json()["result"],
        "error": run.error,
        "meta": meta,
        "created": run.created,
        "updated": time.time(),
        "completed": run.ended,
    }


def _step_row(run: ChainRun, step: StepState) -> dict[str, Any]:
    return {
        "id": f"{run.run_id}/{step.key}",
        "run": run.run_id,
        "name": step.name,
        "what": step.what,
        "status": step.status,
        "order": step.order,
        "plugin": step.plugin,
        "command": step.command,
        "result": step.result,
        "error": step.error,
        "meta": {"args": step.args, "tries": step.tries, "ms": round(step.ms, 1)},
        "created": step.started or time.time(),
        "updated": time.time(),
        "completed": step.ended,
    }
