"""The envelopes the broker reads and writes: requests to its own services, the request a routed
plugin's worker receives, the worker's answer, and every reply and error the broker sends.

Plain functions over envelopes, so what a request means and what a reply says can be read and
tested without sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import orjson

from arbiter.broker.tracing import Span, worker_headers
from arbiter.wire import envelope as env
from arbiter.wire import trace

SOURCE = "arbiter"


class BadRequest(ValueError):
    """A request to one of our services that we cannot read; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class RouteInput:
    """What ``arbiter.route`` and ``arbiter.explain`` read from the envelope's payload. Made once
    per request, so not frozen: a frozen dataclass costs four times as much to build."""

    envelope: dict[str, Any]
    text: str
    files: tuple[str, ...]
    caller: str | None
    command: str | None
    parameters: dict[str, Any]
    collaborate: bool = True  # run the decision's collaboration plan (False: the primary only)
    span: Span | None = None  # the broker's span its tries hang from: the request's, or a chain step's

    def trace_parent(self) -> trace.TraceContext:
        """The trace its tries join, under :attr:`span` (the caller's span when there is none)."""
        span = self.span
        if span is None:
            headers = self.envelope.get("headers")
            return trace.from_headers(headers if isinstance(headers, dict) else None)
        return trace.TraceContext(span.parent_for_children(), span.context.state, span.context.remote)

    @property
    def trace_id(self) -> str | None:
        return self.span.trace_id if self.span is not None else None

    @property
    def cache_key(self) -> tuple[str, tuple[str, ...], str | None]:
        return (self.text, self.files, self.caller)


def read_envelope(body: Sequence[bytes]) -> dict[str, Any]:
    """The request envelope of an own service, every field checked (:func:`envelope.check`), or
    ``BadRequest`` with BAD_ENVELOPE naming the field that is wrong."""
    if len(body) != 1:
        raise BadRequest("BAD_ENVELOPE", f"expected one body frame holding a JSON envelope, got {len(body)}")
    try:
        data = orjson.loads(body[0])
    except orjson.JSONDecodeError as exc:
        raise BadRequest("BAD_ENVELOPE", f"the body is not JSON: {exc}") from None
    try:
        return env.check(data)
    except env.EnvelopeError as exc:
        raise BadRequest("BAD_ENVELOPE", str(exc)) from None


MAX_FILES = 1000  # paths a routed request may name


def read_route_input(body: Sequence[bytes]) -> RouteInput:
    """What ``arbiter.route`` and ``arbiter.explain`` read; every payload field they use is
    checked here, once, so nothing later can trip over its type."""
    envelope = read_envelope(body)
    payload = envelope.get("payload") or {}
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("BAD_REQUEST", "payload.text must be a non-empty string (the request to route)")
    files = payload.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files) or len(files) > MAX_FILES:
        raise BadRequest("BAD_REQUEST", f"payload.files must be a list of at most {MAX_FILES} path strings")
    command = payload.get("command")
    if command is not None and not isinstance(command, str):
        raise BadRequest("BAD_REQUEST", "payload.command must be a string")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("BAD_REQUEST", "payload.parameters must be an object")
    if not isinstance(payload.get("context") or {}, dict):
        raise BadRequest("BAD_REQUEST", "payload.context must be an object")
    caller = payload.get("from") if "from" in payload else payload.get("caller")
    if caller is not None and not isinstance(caller, str):
        raise BadRequest("BAD_REQUEST", "payload.from must be a plugin name (a string)")
    collaborate = payload.get("collaborate", True)
    if not isinstance(collaborate, bool):
        raise BadRequest("BAD_REQUEST", "payload.collaborate must be true or false")
    return RouteInput(envelope, text, tuple(files), caller or None, command, parameters, collaborate)


def dispatch_body(
    route: RouteInput,
    plugin: str,
    command: str,
    parameters: Mapping[str, Any],
    request_id: str,
    collaborators: Sequence[str],
    retry_count: int = 0,
    span_id: str = "",
) -> bytes:
    """The request the chosen plugin's worker receives: the caller's envelope, re-addressed.

    The messageId stays, so a client's retry is recognised as a duplicate by the worker;
    ``metadata.retryCount`` says how many dispatches of this request came before. Its
    ``traceparent`` has the request's trace-id and flags and the try's own span (``span_id``)
    as parent; ``tracestate`` goes on unchanged."""
    original = route.envelope
    headers = original.get("headers")
    out = {
        **original,
        "headers": worker_headers(
            headers if isinstance(headers, dict) else None, route.trace_parent(), span_id or trace.new_span_id()
        ),
        "messageId": original.get("messageId") or env.new_id(),
        "correlationId": original.get("correlationId") or original.get("messageId"),
        "timestamp": original.get("timestamp") or env.iso(env.utc_now()),
        "source": original.get("source") or SOURCE,
        "destination": plugin,
        "topic": f"plugin/{plugin}/request",
        "messageType": "request",
        "payload": {
            "command": command,
            "parameters": parameters,
            "context": {
                **((original.get("payload") or {}).get("context") or {}),
                "text": route.text,
                "files": list(route.files),
                "requestId": request_id,
                "collaborators": list(collaborators),
            },
        },
        "metadata": {**(original.get("metadata") or {}), "retryCount": retry_count},
    }
    return orjson.dumps(out)


@dataclass(slots=True)
class WorkerAnswer:
    """A worker's reply, read once: its envelope (None for a plain body) and what it says (not
    frozen, as :class:`RouteInput`)."""

    body: Sequence[bytes]
    envelope: dict[str, Any] | None
    error_code: str | None
    error_message: str

    @classmethod
    def read(cls, body: Sequence[bytes]) -> WorkerAnswer:
        envelope = env.as_envelope(body[0]) if len(body) == 1 else None
        payload = (envelope or {}).get("payload") or {}
        if payload.get("status") != "error":
            return cls(body, envelope, None, "")
        error = payload.get("error")
        if not isinstance(error, dict):
            return cls(body, envelope, "ERROR", str(error or ""))
        return cls(body, envelope, str(error.get("code") or "ERROR"), str(error.get("message") or ""))

    @property
    def result(self) -> Any:
        if self.envelope is None:
            return b"".join(self.body).decode("utf-8", "replace")
        return (self.envelope.get("payload") or {}).get("result")


def routed_reply(
    route: RouteInput,
    plugin: str,
    command: str,
    decision: Any,
    answer: WorkerAnswer,
    steps: Sequence[Mapping[str, Any]] = (),
    degraded: bool = False,
) -> bytes:
    """The client's answer: the worker's result (or error), the decision, and how it was reached."""
    outcome: dict[str, Any] = {"plugin": plugin, "command": command, "decision": decision, "result": answer.result}
    if steps:
        outcome["steps"] = list(steps)
        outcome["degraded"] = degraded
    if answer.error_code is None:
        return orjson.dumps(env.success_reply(route.envelope, SOURCE, outcome))
    reply = env.error_reply(route.envelope, SOURCE, "PLUGIN_ERROR", "the plugin's worker answered with an error")
    reply["payload"]["error"]["plugin"] = ((answer.envelope or {}).get("payload") or {}).get("error")
    reply["payload"]["result"] = outcome
    return orjson.dumps(reply)


def error_body(request: Sequence[bytes] | Mapping[str, Any] | None, code: str, message: str, **extra: Any) -> bytes:
    """A broker error envelope answering ``request`` (an envelope, raw body frames, or nothing)."""
    original: Mapping[str, Any] = {}
    if isinstance(request, Mapping):
        original = request
    elif request and len(request) == 1:
        original = env.as_envelope(request[0]) or {}
    reply = env.error_reply(original, SOURCE, code, message)
    reply["payload"]["error"].update(extra)
    return orjson.dumps(reply)


def success_body(request: Mapping[str, Any], result: Any) -> bytes:
    return orjson.dumps(env.success_reply(request, SOURCE, result))


def seconds_left(envelope: Mapping[str, Any], default_s: float) -> float:
    """How long the client will wait: its envelope's ``metadata.expiresAt``, else ``default_s``."""
    moment = env.expires_at(envelope)
    return default_s if moment is None else (moment - env.utc_now()).total_seconds()
