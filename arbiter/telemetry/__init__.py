"""Seeing the broker run from outside: log records as text or JSON lines, and the optional
OpenTelemetry export of spans. Nothing here is needed to route or carry a request; the broker
calls in, never the other way round.

May import: arbiter.wire.
"""
