"""W3C Trace Context (https://www.w3.org/TR/trace-context/) in the envelope's ``headers``.

``traceparent`` is ``<version>-<trace-id>-<parent-id>-<flags>``: 2, 32, 16 and 2 lowercase hex
digits. It is authoritative; the older ``traceId`` header is kept equal to its trace-id so
readers of ``traceId`` keep working. A missing or invalid ``traceparent`` never refuses a
request: the trace starts anew there (the specification's rule). ``tracestate`` is carried on
unchanged when it is valid and within the specification's limits, else dropped or trimmed.

A handler run by the SDK worker sees the trace of the request it serves in :data:`current`, and
:func:`arbiter.wire.envelope.new_request` continues that trace, so a worker's own requests join
the caller's trace.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Mapping

VERSION = "00"
SAMPLED = 0x01
MAX_STATE_MEMBERS = 32
MAX_STATE_CHARS = 512  # what the specification asks every vendor to pass on at least
LONG_MEMBER_CHARS = 128  # members over this are the first dropped when trimming

_HEX2 = re.compile(r"[0-9a-f]{2}")
_V00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ANY_VERSION = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_KEY = re.compile(r"(?:[a-z0-9][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})")
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


def new_trace_id() -> str:
    """32 hex digits, never all zero. Ids must be unique, not secret: the process's PRNG."""
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """16 hex digits, never all zero."""
    return f"{random.getrandbits(64) or 1:016x}"


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent``: which trace, which span is the parent, the flags."""

    trace_id: str
    parent_id: str
    flags: int = SAMPLED

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    @property
    def text(self) -> str:
        """The header's value; always version 00, the version this side speaks."""
        return f"{VERSION}-{self.trace_id}-{self.parent_id}-{self.flags:02x}"

    def child(self, span_id: str | None = None) -> TraceParent:
        """The same trace and flags under a new parent (the span of whoever passes it on)."""
        return TraceParent(self.trace_id, span_id or new_span_id(), self.flags)


def new_traceparent(sampled: bool = True) -> TraceParent:
    return TraceParent(new_trace_id(), new_span_id(), SAMPLED if sampled else 0)


def parse_traceparent(value: Any) -> TraceParent | None:
    """The ``traceparent`` in ``value``, or None when it is not one (then a new trace starts).
    Version ff and all-zero ids are invalid; a version above 00 is read leniently: its first
    four fields, the rest ignored when it follows a dash, only the sampled flag kept."""
    if not isinstance(value, str) or len(value) < 55:
        return None
    value = value.strip(" \t")
    if value.startswith(VERSION):
        found = _V00.fullmatch(value)
        flags_mask = 0xFF
    else:
        found = _ANY_VERSION.match(value)
        if found is not None and (found.group(1) == "ff" or (len(value) > 55 and value[55] != "-")):
            found = None
        flags_mask = SAMPLED
    if found is None:
        return None
    trace_id, parent_id, flags = found.groups()[-3:]
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16) & flags_mask)


def parse_tracestate(value: Any) -> str | None:
    """``tracestate`` as it is passed on: unchanged when valid and within 512 characters; members
    over 128 characters, then the right-most ones, dropped until it fits; None when invalid
    (a bad member, a repeated key, more than 32 members)."""
    if not isinstance(value, str):
        return None
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > MAX_STATE_MEMBERS:
        return None
    keys = set()
    for member in members:
        key, eq, val = member.partition("=")
        if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(val) or key in keys:
            return None
        keys.add(key)
    if len(value) <= MAX_STATE_CHARS:
        return value
    return _trimmed(members)


def _trimmed(members: list[str]) -> str | None:
    kept = [m for m in members if len(m) <= LONG_MEMBER_CHARS]
    while kept and len(",".join(kept)) > MAX_STATE_CHARS:
        kept.pop()
    return ",".join(kept) or None


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace a request belongs to, as read from its headers. ``remote``: the caller sent a
    valid ``traceparent`` (its ``parent.parent_id`` is the caller's span); False when the trace
    starts with this request."""

    parent: TraceParent
    state: str | None = None
    remote: bool = True

    @property
    def trace_id(self) -> str:
        return self.parent.trace_id

    def headers(self, span_id: str | None = None) -> dict[str, str]:
        """The trace headers for a request sent under ``span_id`` (default: the parent as read)."""
        parent = self.parent if span_id is None else self.parent.child(span_id)
        out = {"traceparent": parent.text, "traceId": parent.trace_id, "spanId": parent.parent_id}
        if self.state is not None:
            out["tracestate"] = self.state
        return out


def from_headers(headers: Mapping[str, Any] | None) -> TraceContext:
    """The trace of a request with these headers. No valid ``traceparent``: a new trace starts,
    keeping a legacy ``traceId`` of 32 hex digits as its trace-id when there is no
    ``traceparent`` at all; ``tracestate`` is dropped with an invalid ``traceparent``."""
    headers = headers or {}
    raw = headers.get("traceparent")
    parent = parse_traceparent(raw)
    if parent is not None:
        return TraceContext(parent, parse_tracestate(headers.get("tracestate")))
    legacy = headers.get("traceId")
    if raw is None and isinstance(legacy, str) and len(legacy) == 32 and _is_id(legacy.lower()):
        return TraceContext(TraceParent(legacy.lower(), new_span_id()), None, False)
    return TraceContext(new_traceparent(), None, False)


def _is_id(text: str) -> bool:
    return text != _ZERO_TRACE and all(_HEX2.fullmatch(text[i : i + 2]) for i in range(0, len(text), 2))


# The trace of the request the current SDK handler serves (None outside a handler).
current: ContextVar[TraceContext | None] = ContextVar("arbiter_trace", default=None)


def outgoing(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """Trace headers for a new request: those given when they hold a valid ``traceparent``, else
    a child of :data:`current` when a handler is running, else a new trace."""
    given = parse_traceparent((headers or {}).get("traceparent"))
    if given is not None:
        return TraceContext(given, parse_tracestate((headers or {}).get("tracestate"))).headers()
    running = current.get()
    if running is not None:
        return running.headers(new_span_id())
    return from_headers(headers).headers()
