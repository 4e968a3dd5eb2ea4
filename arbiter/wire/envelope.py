"""Building and reading the JSON message envelope that travels inside MDP bodies.

The envelope is the seed's message format (messageId, correlationId, timestamp, source,
destination, topic, messageType, priority, headers, payload, metadata). Clients build
requests with :func:`new_request`, workers answer with :func:`success_reply` or
:func:`error_reply`. ``messageId`` doubles as the idempotency key: a retry re-sends the
same envelope with ``metadata.retryCount`` incremented (:func:`mark_retry`), so a worker
can recognise a duplicate and answer it from its cache instead of running it twice.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import orjson

from arbiter.wire import trace

DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_PRIORITY = 5
MAX_ID_CHARS = 256  # messageId and correlationId: ids, not payloads

_NULL = type(None)
_SCALARS = frozenset({str, int, float, bool, _NULL})
# Every top-level field an envelope may carry, and what it must be when present (docs/PROTOCOL.md
# §3.1), as exact types: JSON decoders make exactly these, and ``True`` is then no integer.
_TOP_LEVEL: dict[str, tuple[frozenset[type], str]] = {
    "messageId": (frozenset({str}), "a string"),
    "correlationId": (frozenset({str, _NULL}), "a string or null"),
    "timestamp": (frozenset({str}), "a string"),
    "source": (frozenset({str}), "a string"),
    "destination": (frozenset({str}), "a string"),
    "topic": (frozenset({str}), "a string"),
    "messageType": (frozenset({str}), "a string"),
    "priority": (frozenset({int}), "an integer"),
    "headers": (frozenset({dict}), "an object"),
    "payload": (frozenset({dict}), "an object"),
    "metadata": (frozenset({dict}), "an object"),
}
_METADATA: dict[str, tuple[frozenset[type], str]] = {
    "retryCount": (frozenset({int}), "a non-negative integer"),
    "timeout": (frozenset({int, float}), "a number of milliseconds"),
    "expiresAt": (frozenset({str}), "an ISO-8601 time"),
}


class EnvelopeError(ValueError):
    """An envelope field of the wrong type or form; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _typed(value: Any, kinds: frozenset[type] | tuple[type, ...]) -> bool:
    """Whether ``value`` is exactly of one of ``kinds`` (so JSON's ``true`` is not an integer)."""
    return type(value) in kinds


def check(data: Any) -> dict[str, Any]:
    """``data`` when it is an envelope every part of the broker can read without surprise: each
    field the seed defines, when present, of its type; ``headers`` a flat object of scalars;
    ``metadata.expiresAt`` a time. Raises :class:`EnvelopeError` naming the first field that is not.
    Fields the seed does not define are left alone. One pass over the fields present: the broker
    checks every envelope it reads."""
    if type(data) is not dict:
        raise EnvelopeError("(body)", f"must be a JSON object, not {_json_type(data)}")
    for name, value in data.items():
        rule = _TOP_LEVEL.get(name)
        if rule is not None and type(value) not in rule[0]:
            raise EnvelopeError(name, f"must be {rule[1]}, not {_json_type(value)}")
    for name in ("messageId", "correlationId"):
        value = data.get(name)
        if value is not None and len(value) > MAX_ID_CHARS:
            raise EnvelopeError(name, f"must be at most {MAX_ID_CHARS} characters")
    headers = data.get("headers")
    if headers:
        for key, value in headers.items():
            if type(value) not in _SCALARS:
                raise EnvelopeError(
                    f"headers.{key}", f"must be a string, number, boolean or null, not {_json_type(value)}"
                )
    metadata = data.get("metadata")
    if metadata:
        _check_metadata(metadata)
    return data


def _check_metadata(metadata: dict[str, Any]) -> None:
    for name, value in metadata.items():
        rule = _METADATA.get(name)
        if rule is not None and type(value) not in rule[0]:
            raise EnvelopeError(f"metadata.{name}", f"must be {rule[1]}, not {_json_type(value)}")
    if metadata.get("retryCount", 0) < 0:
        raise EnvelopeError("metadata.retryCount", "must be a non-negative integer")
    if "expiresAt" in metadata and _parse_time(metadata["expiresAt"]) is None:
        raise EnvelopeError("metadata.expiresAt", "must be an ISO-8601 time such as 2026-01-31T12:00:00.000Z")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# The last whole second formatted, and its text: one immutable pair, replaced whole, so a thread
# always reads a second together with its own text (a list updated item by item could pair them wrong).
_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The current time as :func:`iso` prints it; the date part is formatted once per second,
    since every reply carries a timestamp. Safe from any thread without a lock: each call reads
    the cached pair once and keeps to what it read."""
    global _second
    moment = time.time()
    whole = int(moment)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int((moment - whole) * 1000):03d}Z"


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision and a ``Z``, the form JavaScript's Date prints."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UUID4_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)  # the version nibble and the variant bits
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48  # version 4, RFC 4122 variant


def new_id() -> str:
    """A version-4 UUID from the process's PRNG: ids must be unique, not secret, and reading the
    OS's entropy per message costs a system call on the broker's hot path. Formatted by hand:
    building a ``uuid.UUID`` and printing it was a visible part of a routed request."""
    hexa = f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}"


def span_id() -> str:
    return f"{random.getrandbits(64):016x}"


def new_request(
    destination: str,
    command: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    source: str = "arbiter-client",
    topic: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    correlation_id: str | None = None,
    headers: Mapping[str, Any] | None = None,
    message_type: str = "request",
) -> dict[str, Any]:
    """A complete request envelope. Its ``traceparent`` is the one in ``headers``, else a child
    of the trace an SDK handler is serving (:data:`trace.current`), else a new trace."""
    now = utc_now()
    message_id = new_id()
    merged_headers = dict(headers or {})
    merged_headers.update(trace.outgoing(headers))  # traceparent is authoritative; traceId mirrors it
    return {
        "messageId": message_id,
        "correlationId": correlation_id or message_id,
        "timestamp": iso(now),
        "source": source,
        "destination": destination,
        "topic": topic or f"plugin/{destination}/request",
        "messageType": message_type,
        "priority": priority,
        "headers": merged_headers,
        "payload": {"command": command, "parameters": dict(parameters or {}), "context": dict(context or {})},
        "metadata": {
            "retryCount": 0,
            "timeout": timeout_ms,
            "expiresAt": iso(now + timedelta(milliseconds=timeout_ms)),
        },
    }


def mark_retry(envelope: dict[str, Any]) -> dict[str, Any]:
    """Count one more attempt, in place; the messageId stays so the retry is recognisable."""
    metadata = envelope.get("metadata")
    if not isinstance(metadata, dict):
        metadata = envelope["metadata"] = {}
    count = metadata.get("retryCount")
    metadata["retryCount"] = (count if _typed(count, (int,)) and count >= 0 else 0) + 1
    return envelope


def _reply_base(request: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The fields every response shares: it answers ``request`` and continues its trace. Only
    fields of the right type are carried over, so a reply can be built for any request, even
    one refused for its envelope."""
    headers = request.get("headers")
    headers = {k: v for k, v in headers.items() if _typed(v, _SCALARS)} if isinstance(headers, dict) else {}
    headers["parentSpanId"] = headers.get("spanId")
    headers["spanId"] = span_id()
    message_id, sender, priority = request.get("messageId"), request.get("source"), request.get("priority")
    return {
        "messageId": new_id(),
        "correlationId": message_id if isinstance(message_id, str) else None,
        "timestamp": now_iso(),
        "source": source,
        "destination": sender if isinstance(sender, str) else "*",
        "topic": f"plugin/{source}/response",
        "messageType": "response",
        "priority": priority if _typed(priority, (int,)) else DEFAULT_PRIORITY,
        "headers": headers,
    }


def success_reply(request: Mapping[str, Any], source: str, result: Any) -> dict[str, Any]:
    reply = _reply_base(request, source)
    reply["payload"] = {"status": "success", "result": result}
    return reply


def error_reply(request: Mapping[str, Any], source: str, code: str, message: str) -> dict[str, Any]:
    reply = _reply_base(request, source)
    reply["payload"] = {"status": "error", "error": {"code": code, "message": message}}
    return reply


def encode(envelope: Mapping[str, Any]) -> bytes:
    return orjson.dumps(envelope)


def decode(body: bytes) -> Any:
    """Parse JSON; raises ``ValueError`` (orjson's error is a subclass) on anything else."""
    return orjson.loads(body)


def as_envelope(body: bytes) -> dict[str, Any] | None:
    """The envelope in ``body``, or None when the body is not one a broker can rely on (plain MDP
    traffic, or JSON that breaks :func:`check`): such a body is passed on untouched and read as
    bytes, never as an envelope."""
    try:
        data = orjson.loads(body)
    except ValueError:
        return None
    if not (
        isinstance(data, dict) and isinstance(data.get("messageId"), str) and isinstance(data.get("payload"), dict)
    ):
        return None
    try:
        return check(data)
    except EnvelopeError:
        return None


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def expires_at(envelope: Mapping[str, Any]) -> datetime | None:
    """``metadata.expiresAt`` as an aware datetime; None when missing or unreadable (never expires)."""
    metadata = envelope.get("metadata")
    return _parse_time(metadata.get("expiresAt")) if isinstance(metadata, dict) else None


def is_expired(envelope: Mapping[str, Any], now: datetime | None = None) -> bool:
    """True when ``metadata.expiresAt`` is in the past; a missing or bad value never expires."""
    moment = expires_at(envelope)
    return moment is not None and moment < (now or utc_now())
