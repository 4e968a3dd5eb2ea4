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

DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_PRIORITY = 5


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
    """A complete request envelope; the trace starts here unless ``headers`` carries one."""
    now = utc_now()
    message_id = new_id()
    merged_headers = {"traceId": new_id().replace("-", ""), "spanId": span_id()}
    merged_headers.update(headers or {})
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
    metadata = envelope.setdefault("metadata", {})
    metadata["retryCount"] = int(metadata.get("retryCount", 0)) + 1
    return envelope


def _reply_base(request: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The fields every response shares: it answers ``request`` and continues its trace."""
    headers = dict(request.get("headers") or {})
    headers["parentSpanId"] = headers.get("spanId")
    headers["spanId"] = span_id()
    return {
        "messageId": new_id(),
        "correlationId": request.get("messageId"),
        "timestamp": now_iso(),
        "source": source,
        "destination": request.get("source", "*"),
        "topic": f"plugin/{source}/response",
        "messageType": "response",
        "priority": request.get("priority", DEFAULT_PRIORITY),
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
    """The envelope in ``body``, or None when the body is not one (plain MDP traffic)."""
    try:
        data = orjson.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("messageId"), str) and isinstance(data.get("payload"), dict):
        return data
    return None


def expires_at(envelope: Mapping[str, Any]) -> datetime | None:
    """``metadata.expiresAt`` as an aware datetime; None when missing or unreadable (never expires)."""
    expires = (envelope.get("metadata") or {}).get("expiresAt")
    if not isinstance(expires, str):
        return None
    try:
        moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def is_expired(envelope: Mapping[str, Any], now: datetime | None = None) -> bool:
    """True when ``metadata.expiresAt`` is in the past; a missing or bad value never expires."""
    moment = expires_at(envelope)
    return moment is not None and moment < (now or utc_now())
