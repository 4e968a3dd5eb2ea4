"""``arbiter.route``: decide where a request goes, then carry it there (docs/PROTOCOL.md §4.2).

Request: an envelope whose payload holds ``text`` (required), ``files``, ``from`` (the calling
plugin, for its routing ACLs), and optionally the ``command`` and ``parameters`` for the worker.
Reply: a success envelope whose ``result`` holds the worker's result, the plugin and command that
produced it, the decision, and the dispatch steps when it took more than one try; ``NO_ROUTE``
(with the decision's nearest candidates) when no plugin fits; ``NO_WORKER`` when the plugins that
fit have no live worker (no request waits on a plugin nobody serves); ``NEEDS_INPUT`` (naming each
command's missing parameters) when a required parameter is neither given nor stated in the text,
before any worker sees the request; the dispatcher's errors otherwise (``EXHAUSTED``,
``PLUGIN_ERROR``, ...).
Every request's decision is recorded and published on ``routing/decision``.
Command line: ``arbiter request arbiter.route '{"payload": {"text": "..."}}'``, ``arbiter demo``.
"""

from __future__ import annotations

import time

from arbiter.broker import messages, tracing
from arbiter.broker.decision_cache import Decided
from arbiter.broker.plans import PhaseCall, phase_calls, run_plan
from arbiter.broker.routed import Routed
from arbiter.broker.services.base import ServiceHost
from arbiter.broker.workers import Pending
from arbiter.routing.parameters import Call
from arbiter.routing.pipeline import Request, new_request_id


class RouteService:
    name = "arbiter.route"

    def read(self, body: list[bytes]) -> messages.RouteInput:
        return messages.read_route_input(body)

    def execute(self, host: ServiceHost, pending: Pending, route: messages.RouteInput) -> None:
        """A cached decision is used at once; a new text is decided by a decider process when the
        broker runs any, else here on the loop."""
        route.span = tracing.begin_request(host.telemetry, self.name, route.envelope, {})
        hit = host.decision_cache.get(route.cache_key)
        if hit is not None:
            host.counters["decision-cache-hits"] += 1
            self._carry(host, pending, route, hit, new_request_id(), True)
            return
        request_id = new_request_id()
        generation = host.decision_cache.generation
        if host.ask_decider(
            pending, route, request_id, lambda data: self._decided(host, pending, route, request_id, data, generation)
        ):
            return
        self._decided(host, pending, route, request_id, None, generation)

    def _decided(
        self,
        host: ServiceHost,
        pending: Pending,
        route: messages.RouteInput,
        request_id: str,
        decided: Decided | None,
        generation: int,
    ) -> None:
        """Carry the request on with the decision a decider made (None: decide it here, now)."""
        if decided is None:
            result = host.router.route(Request(route.text, route.files, route.caller, request_id), host.health)
            decided = Decided.of(result.to_json(trace=False))
        host.metrics.decided(time.monotonic() - pending.received)  # from admission: the decider's queue included
        host.decision_cache.put(route.cache_key, decided, generation)
        self._carry(host, pending, route, decided, request_id, False)

    def _carry(
        self,
        host: ServiceHost,
        pending: Pending,
        route: messages.RouteInput,
        decided: Decided,
        request_id: str,
        cached: bool,
    ) -> None:
        if host.wants("routing/decision"):
            host.publish("routing/decision", _event(decided, request_id, cached, route.trace_id))
        if decided.primary is None:
            decision = decided.json_for(request_id)
            if decided.unserved:
                code, status = "NO_WORKER", "no-worker"
                message = f"no live worker serves {', '.join(decided.unserved)}, which fits this request"
            else:
                code, status, message = "NO_ROUTE", "no-route", "no plugin fits this request"
            host.reply(pending, messages.error_body(route.envelope, code, message, decision=decision))
            host.log_decision(decided.row.entry(request_id, {"status": status}, False, route.trace_id))
            end_request(host, route, request_id, None, status)
            return
        plan = route.collaborate and len(decided.phases) > 1
        calls = phase_calls(host, route, decided) if plan else self._primary_call(host, route, decided.primary)
        wanting = [_wanting(plugin, call) for _domain, plugin, call in calls if call is not None and call.missing]
        if wanting:
            self._needs_input(host, pending, route, decided, request_id, wanting)
            return
        patience = messages.seconds_left(route.envelope, host.settings.request_timeout_s)
        deadline = min(pending.deadline, pending.received + patience)
        if plan:
            timeout_ms = int(host.settings.attempt_timeout_s * 1000)
            run_plan(host, pending, route, decided, calls, request_id, deadline - time.monotonic(), timeout_ms)
            return
        routed = Routed(
            pending.client,
            pending.service_frame,
            route,
            decided,
            request_id,
            cached,
            deadline,
            pending.received,
            pending,
        )
        host.start_routed(routed)

    @staticmethod
    def _primary_call(host: ServiceHost, route: messages.RouteInput, primary: str) -> list[PhaseCall]:
        plugin = host.plugins.get(primary)
        return [("", primary, host.dispatcher.calls.call_for(route, plugin, True))] if plugin is not None else []

    @staticmethod
    def _needs_input(
        host: ServiceHost,
        pending: Pending,
        route: messages.RouteInput,
        decided: Decided,
        request_id: str,
        wanting: list[dict],
    ) -> None:
        """Ask for what the request lacks instead of sending a worker a request it would refuse."""
        said = "; ".join(f"{w['plugin']} {w['command']} needs {', '.join(w['missing'])}" for w in wanting)
        message = f"{said}: give it in payload.parameters or say it in the text"
        decision = decided.json_for(request_id)
        body = messages.error_body(route.envelope, "NEEDS_INPUT", message, decision=decision, missing=wanting)
        host.reply(pending, body)
        outcome = {"status": "needs-input", "plugin": decided.primary, "missing": wanting}
        host.log_decision(decided.row.entry(request_id, outcome, False, route.trace_id))
        end_request(host, route, request_id, decided.primary, "needs-input")


def _wanting(plugin: str, call: Call) -> dict:
    return {"plugin": plugin, "command": call.command, "missing": list(call.missing)}


def _event(decided: Decided, request_id: str, cached: bool, trace_id: str | None = None) -> dict:
    return {
        "requestId": request_id,
        "userInput": decided.user_input,
        "primaryPlugin": decided.primary,
        "fallbackPlugins": list(decided.plan[1:]),
        "cached": cached,
        "traceId": trace_id,
    }


def end_request(
    host: ServiceHost, route: messages.RouteInput, request_id: str, plugin: str | None, status: str
) -> None:
    """End the span of a routed request (``arbiter.route``) with what became of it."""
    if host.telemetry is not None:
        attributes = {"arbiter.request_id": request_id, "arbiter.plugin": plugin or "", "arbiter.status": status}
        error = None if status in ("success", "cached") else status
        tracing.end(host.telemetry, route.span, attributes, error)
