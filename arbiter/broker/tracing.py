"""The broker's part of a trace: the span of each request it routes (``arbiter.route``,
``arbiter.explain``, ``arbiter.chain``), of each chain step or collaboration phase, and of each
try it sends a worker, and the W3C ``traceparent`` each worker receives (docs/TRACING.md).

Every span has an id whether or not spans are exported: a worker's ``traceparent`` names the
try's span as its parent. With OpenTelemetry export on (``host.telemetry``, an
:class:`arbiter.telemetry.otel.Spans`), the spans are also recorded, with the times they began
and ended and their parents given explicitly: the loop is single-threaded and a try ends
messages later, so nothing here relies on a "current span". With it off, the only cost is the
``is None`` checks below.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

from arbiter.wire import trace
from arbiter.wire.trace import TraceContext, TraceParent

log = logging.getLogger("arbiter.broker")


@dataclass(slots=True)
class Span:
    """One span of the broker's: its trace, its own id, and the exported span when export is on."""

    context: TraceContext  # the trace as the request carried it (state, flags)
    span_id: str
    exported: Any = None

    @property
    def trace_id(self) -> str:
        return self.context.trace_id

    def parent_for_children(self) -> TraceParent:
        return TraceParent(self.context.trace_id, self.span_id, self.context.parent.flags)


def begin_request(telemetry: Any, name: str, envelope: dict[str, Any], attributes: Mapping[str, Any]) -> Span:
    """The span of a request the broker serves itself, parented on the caller's ``traceparent``
    (a missing or invalid one starts a new trace). The envelope's headers are set to the trace
    as it goes on — ``traceparent``, ``traceId`` equal to its trace-id, a valid ``tracestate`` —
    so replies, dead letters and the workers' requests all carry it."""
    headers = envelope.get("headers")
    context = trace.from_headers(headers if isinstance(headers, dict) else None)
    exported = None
    if telemetry is None:
        span_id = trace.new_span_id()
    else:
        exported = telemetry.start(name, context.parent if context.remote else None, attributes)
        trace_id, span_id = telemetry.ids(exported)
        if not context.remote:
            context = TraceContext(TraceParent(trace_id, span_id, context.parent.flags), None, False)
    if not context.remote:  # the trace starts here: the broker's span is its first parent
        context = TraceContext(TraceParent(context.trace_id, span_id, context.parent.flags), None, False)
    fresh = dict(headers) if isinstance(headers, dict) else {}
    fresh.pop("tracestate", None)
    fresh.update(context.headers())
    envelope["headers"] = fresh
    return Span(context, span_id, exported)


def begin_child(telemetry: Any, name: str, parent: TraceContext, attributes: Mapping[str, Any]) -> Span:
    """A span under ``parent`` (whose ``parent.parent_id`` is the parent span): a step of a run,
    or a try."""
    if telemetry is None:
        return Span(parent, trace.new_span_id())
    exported = telemetry.start(name, parent.parent, attributes)
    return Span(parent, telemetry.ids(exported)[1], exported)


def end(telemetry: Any, span: Span | None, attributes: Mapping[str, Any], error: str | None = None) -> None:
    """End ``span`` now (once: a second call does nothing)."""
    if telemetry is None or span is None or span.exported is None:
        return
    exported, span.exported = span.exported, None
    telemetry.end(exported, attributes, error, time.time_ns())


def run_meta(span: Span) -> dict[str, str]:
    """What a chain run keeps of its trace in its meta (and so in the store): its steps, resumed
    after a restart too, join the trace under the run's span."""
    return TraceContext(span.parent_for_children(), span.context.state).headers()


def of_meta(meta: Mapping[str, Any]) -> TraceContext:
    """The trace a run's steps belong to (a run stored without one starts a new trace)."""
    return trace.from_headers(meta)


def worker_headers(headers: Mapping[str, Any] | None, context: TraceContext, span_id: str) -> dict[str, Any]:
    """A try's headers: the request's, with the try's span as the worker's parent; tracestate as is."""
    out = dict(headers or {})
    out.update(context.headers(span_id))
    return out


def begin_try(telemetry: Any, plugin: str, command: str, routed: Any) -> Span:
    """The span of one try of ``routed`` (a :class:`~arbiter.broker.dispatch.Routed`), under
    the span of its request or chain step."""
    parent = routed.route.trace_parent()
    if telemetry is None:
        return Span(parent, trace.new_span_id())
    attributes = {"arbiter.plugin": plugin, "arbiter.command": command, "arbiter.try": routed.attempts + 1}
    attributes["arbiter.request_id"] = routed.request_id
    return begin_child(telemetry, "arbiter.try", parent, attributes)


def end_try(telemetry: Any, span: Span | None, step: Mapping[str, Any], error: str | None = None) -> None:
    """End a try's span with its outcome (a dispatch step: ``outcome``, ``detail``)."""
    if telemetry is None or span is None:
        return
    outcome = str(step.get("outcome"))
    failed = error or (None if outcome == "success" else str(step.get("detail") or outcome))
    end(telemetry, span, {"arbiter.outcome": outcome}, failed)


def try_failed(telemetry: Any, attempt: Any, step: Mapping[str, Any]) -> None:
    """A try failed (an error, a timeout, no worker): log it with its request and trace, end its span."""
    routed = attempt.routed
    log.warning(
        "try %d of request %s at %s failed: %s",
        routed.attempts,
        routed.request_id,
        attempt.plugin,
        step.get("detail") or step.get("outcome"),
        extra={"requestId": routed.request_id, "traceId": routed.route.trace_id, "plugin": attempt.plugin},
    )
    end_try(telemetry, attempt.span, step)
