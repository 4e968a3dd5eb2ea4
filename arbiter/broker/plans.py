"""A routed request's collaboration plan, run: each phase of the decision (the primary builds the
endpoint, then the platform manager sets up authentication, ...) is a step of a run, through the
same runner and dispatch as chains, in the plan's order — a phase starts when the phases it
depends on completed, phases without an order between them at once.

The client's reply carries every phase: its plugin, command, state, result or error; the result
of the primary's phase is the reply's ``result``, as for a request with one plugin. A caller that
orchestrates itself asks for the primary only (``payload.collaborate: false``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from arbiter.broker import messages, tracing
from arbiter.broker.chains import ChainDesk
from arbiter.broker.decision_cache import Decided
from arbiter.broker.dispatch import Dispatcher
from arbiter.broker.workers import Pending
from arbiter.dsl import ir
from arbiter.dsl.chains import ChainPlan, StepPlan
from arbiter.orchestration.runner import ChainRun
from arbiter.project.model import Plugin
from arbiter.routing.parameters import Call
from arbiter.store.decisions import LogEntry


class PlanHost(Protocol):
    chains: ChainDesk
    dispatcher: Dispatcher

    @property
    def plugins(self) -> dict[str, Plugin]: ...

    def reply(self, pending: Pending, body: bytes) -> None: ...

    def log_decision(self, entry: LogEntry) -> None: ...


PhaseCall = tuple[str, str, "Call | None"]  # (domain, plugin, what it is asked; None: the plugin is gone)


def phase_calls(host: PlanHost, route: messages.RouteInput, decided: Decided) -> list[PhaseCall]:
    """What each phase's plugin is asked: the primary's phase the request's command and
    parameters, the others the command that reads most like the text and whose parameters bind,
    given the request's parameters they declare."""
    calls: list[PhaseCall] = []
    for index, (domain, name, _needs) in enumerate(decided.phases):
        plugin = host.plugins.get(name)
        first = index == 0 and name == decided.primary
        call = host.dispatcher.calls.call_for(route, plugin, first, phase=not first) if plugin is not None else None
        calls.append((domain, name, call))
    return calls


def run_plan(
    host: PlanHost,
    pending: Pending,
    route: messages.RouteInput,
    decided: Decided,
    calls: list[PhaseCall],
    request_id: str,
    patience_s: float,
    timeout_ms: int,
) -> ChainRun | None:
    """Start the plan's run (``calls``: :func:`phase_calls`, none missing a parameter); the
    client is answered when it ends. While the broker stops, no run starts (it could neither go
    on nor end): the client is answered SHUTTING_DOWN at once, and None returned."""
    if host.chains.detached:
        decision = decided.json_for(request_id)
        host.reply(
            pending, messages.error_body(route.envelope, "SHUTTING_DOWN", "the broker is stopping", decision=decision)
        )
        host.log_decision(decided.row.entry(request_id, {"status": "shutdown"}, False, route.trace_id))
        _end(host, route, request_id, None, "shutdown")
        return None
    steps = []
    for domain, plugin, call in calls:
        command = call.command if call is not None else None
        args = tuple(call.bound.parameters.items()) if call is not None else ()
        source = ir.Source("(collaboration plan)", 0)
        steps.append(StepPlan(domain, plugin, command or "", args, None, timeout_ms, None, None, (), source))  # type: ignore[arg-type]
    plan = ChainPlan("collaboration", "sequential", (), int(patience_s * 1000), tuple(steps), ir.Source("", 0))
    needs = {domain: list(after) for domain, _plugin, after in decided.phases}
    meta: dict[str, Any] = {"requestId": request_id, "dependencies": needs}
    if route.span is not None:  # the phases are steps under the request's span
        meta.update(tracing.run_meta(route.span))
    if route.envelope.get("messageId"):  # a client's retry is the same plan: its phases keep their keys
        meta["keyBase"] = route.envelope["messageId"]
    run = host.chains.start(plan, {}, what="plan", meta=meta)
    host.chains.when_done(run, _answer(host, pending, route, decided, request_id))
    return run


def _answer(
    host: PlanHost, pending: Pending, route: messages.RouteInput, decided: Decided, request_id: str
) -> Callable[[ChainRun], None]:
    def answer(run: ChainRun) -> None:
        phases = [_phase(step.to_json()) for step in run.steps.values()]
        first = phases[0] if phases else {}
        decision = decided.json_for(request_id)
        status = "success" if run.status == "completed" else run.status  # as a request of one plugin says
        took = round((time.monotonic() - pending.received) * 1000, 2)
        outcome: dict[str, Any] = {"status": status, "runId": run.run_id, "phases": phases, "durationMs": took}
        if run.status == "completed":
            result = {
                "plugin": first.get("plugin"),
                "command": first.get("command"),
                "decision": decision,
                "result": first.get("result"),
                "phases": phases,
                "runId": run.run_id,
            }
            host.reply(pending, messages.success_body(route.envelope, result))
            outcome["plugin"] = first.get("plugin")
        else:
            message = f"the collaboration plan ended {run.status}: {run.error}"
            body = messages.error_body(
                route.envelope, "COLLABORATION_FAILED", message, decision=decision, phases=phases, runId=run.run_id
            )
            host.reply(pending, body)
        host.log_decision(decided.row.entry(request_id, outcome, run.status == "completed", route.trace_id))
        _end(host, route, request_id, outcome.get("plugin"), status)

    return answer


def _end(host: PlanHost, route: messages.RouteInput, request_id: str, plugin: str | None, status: str) -> None:
    telemetry = getattr(host, "telemetry", None)
    if telemetry is not None:
        attributes = {"arbiter.request_id": request_id, "arbiter.plugin": plugin or "", "arbiter.status": status}
        tracing.end(telemetry, route.span, attributes, None if status == "success" else status)


def _phase(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "phase": step["name"],
        "plugin": step["plugin"],
        "command": step["command"],
        "status": step["status"],
        "result": step["result"],
        "error": step["error"],
        "tries": step["tries"],
        "ms": step["ms"],
    }
