"""``arbiter.explain``: the routing decision for a text and why, without dispatching
(docs/PROTOCOL.md §4.3).

Request: an envelope whose payload is ``{"text": ..., "files": [...], "from": PLUGIN}`` as for
``arbiter.route``.
Reply: a success envelope whose ``result`` is the decision in the explain JSON shape with its
trace, the circuit states it saw, and ``explanation``, the text ``arbiter explain`` prints.
The decision is recorded (``origin`` broker, ``outcome.status`` explained).
Command line: ``arbiter request arbiter.explain '{"payload": {"text": "..."}}'``.
"""

from __future__ import annotations

from arbiter.broker import messages, tracing
from arbiter.broker.services.base import ServiceHost
from arbiter.broker.workers import Pending
from arbiter.routing.explain import render
from arbiter.routing.pipeline import Request, new_request_id
from arbiter.store.decisions import RowTemplate


class ExplainService:
    name = "arbiter.explain"

    def read(self, body: list[bytes]) -> messages.RouteInput:
        return messages.read_route_input(body)

    def execute(self, host: ServiceHost, pending: Pending, route: messages.RouteInput) -> None:
        request = Request(route.text, route.files, route.caller, new_request_id())
        route.span = tracing.begin_request(host.telemetry, self.name, route.envelope, {})
        result = host.router.route(request, host.health)
        data = result.to_json(trace=True)
        data["circuits"] = host.circuits()
        row = RowTemplate.of(data, "broker")
        host.log_decision(row.entry(request.request_id, {"status": "explained"}, None, route.trace_id))
        primary = (data.get("routingDecision") or {}).get("primaryPlugin") or ""
        attributes = {
            "arbiter.request_id": request.request_id,
            "arbiter.plugin": primary,
            "arbiter.status": "explained",
        }
        tracing.end(host.telemetry, route.span, attributes)
        data["explanation"] = render(result)
        host.reply(pending, messages.success_body(route.envelope, data))
