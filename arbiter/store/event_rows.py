"""What the event log says of what the recorder writes: a routing decision, a circuit change, a
chain run's or step's transition, a dead letter — each one event, under the topic the broker
publishes it on, written in the same transaction as the rows it is about.

A batch the broker sends again after its recorder died (:mod:`.recorder`) must not log its
events twice; the rows themselves are written idempotently, an append is not. So every event of
a batch carries the batch's key in its metadata, and a batch whose first event is already in
the log was committed whole (one transaction): its events are skipped.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from arbiter.store import decisions as record
from arbiter.store import events, models

ROUTING = "routing/decision"
DEAD_LETTER = "system/dead-letter"


def decision_event(entry: record.LogEntry) -> dict[str, Any]:
    template, _row_id, request_id, outcome, success, created, trace_id = entry
    first = template.first
    status = (orjson.loads(outcome) or {}).get("status") if outcome else None
    payload = {
        "requestId": request_id,
        "primaryPlugin": first[record.ROW_COLUMNS.index("primary_plugin")],
        "status": status,
        "success": success,
        "traceId": trace_id,
    }
    return _event(ROUTING, "decision", "request", request_id, payload, created)


def circuit_event(circuit: tuple[str, str, str, str]) -> dict[str, Any]:
    plugin, _version, state, reason = circuit
    payload = {"plugin": plugin, "state": state, "reason": reason}
    return _event(f"plugin/{plugin}/circuit-breaker", state, "plugin", plugin, payload, None)


def task_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run's or a step's change, under the topic the broker announced it on
    (``orchestration/chain/<chain>/<run>/<event>``)."""
    run = row.get("run") or row["id"]
    topic = row.get("topic") or f"orchestration/chain/{row['name']}/{run}/{row['status']}"
    payload = {k: row.get(k) for k in ("id", "name", "what", "status", "plugin", "command", "error")}
    payload["run"] = run
    return _event(topic, row["status"], "task", row["id"], payload, None)


def letter_event(item: Any) -> dict[str, Any]:
    letter_id, service, _frames, reason, detail, message_id, _client, at = item
    payload = {"id": letter_id, "service": service, "reason": reason, "detail": detail, "messageId": message_id}
    return _event(DEAD_LETTER, reason, "dead-letter", letter_id, payload, at)


def _event(
    topic: str, kind: str, aggregate_type: str, aggregate_id: str, payload: Any, at: float | None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "topic": topic,
        "event_type": kind,
        "aggregate_type": aggregate_type,
        "aggregate_id": str(aggregate_id),
        "payload": payload,
    }
    if at is not None:
        row["timestamp"] = at
    return row


def logged(rows: list[dict[str, Any]], key: str) -> bool:
    """Whether the batch ``key`` is in the log already (sent again after its recorder died: it
    was committed whole, and nothing of it is to be done again)."""
    if not rows:
        return False
    first = rows[0]
    return (
        models.Event.select(models.Event.seq)
        .where(
            (models.Event.aggregate_type == first["aggregate_type"])
            & (models.Event.aggregate_id == first["aggregate_id"])
            & (models.Event.metadata == {"batch": key})  # the field encodes it as it stores it
        )
        .exists()
    )


def log_batch(rows: list[dict[str, Any]], key: str) -> None:
    """Append a batch's events, marked with ``key``, as the transaction's last write."""
    marker = {"batch": key}
    events.append_many({**row, "metadata": marker} for row in rows)
