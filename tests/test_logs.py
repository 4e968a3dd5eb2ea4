"""Log lines as JSON (arbiter/telemetry/logs.py): the fields, an exception, and that a second
configuration replaces the first."""

from __future__ import annotations

import io
import logging

import orjson

from arbiter.telemetry import logs


def test_json_lines_carry_the_fields_given_and_the_exception() -> None:
    out = io.StringIO()
    logs.configure("json", logging.INFO, out)
    try:
        log = logging.getLogger("arbiter.broker")
        log.warning("try %d failed", 2, extra={"requestId": "req_1", "traceId": "ab" * 16, "plugin": "p"})
        log.debug("not shown")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")
        first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    finally:
        logs.configure("text")
    assert first["event"] == "try 2 failed" and first["level"] == "warning" and first["logger"] == "arbiter.broker"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert (first["requestId"], first["traceId"], first["plugin"]) == ("req_1", "ab" * 16, "p")
    assert "service" not in first and "exc" not in first
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


def test_configuring_again_replaces_the_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("json", logging.INFO, first)
    logs.configure("text", logging.INFO, second)
    try:
        logging.getLogger("arbiter.test").info("hello")
    finally:
        logs.configure("text")
    assert first.getvalue() == "" and "arbiter.test INFO hello" in second.getvalue()
