"""Log records as text lines or JSON lines (``--log-format text|json`` on ``arbiter broker`` and
``arbiter workers``).

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``event`` (the message), ``logger``, and
when the call site knows them (``extra=``) ``requestId``, ``traceId``, ``service``, ``plugin``,
``messageId``; ``exc`` holds an exception's traceback. Log calls never pass secrets or request
bodies: what a record holds is what its message and these fields say.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
FIELDS = ("requestId", "traceId", "service", "plugin", "messageId")  # taken from ``extra=`` when given


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def _iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure(log_format: str = "text", level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) in ``log_format``, replacing the
    handlers it had (a second call changes the format, it does not add a second output)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
