"""The recorder's events: one per row it writes, logged with the batch, never twice for a batch
sent again after a restart."""

from __future__ import annotations

from arbiter.store import database as state
from arbiter.store import events, recorder_process
from arbiter.store.recorder_process import CIRCUITS, LETTERS, TASKS


def _batch() -> list:
    step = {"id": "run_1/deploy", "run": "run_1", "name": "deploy", "what": "step", "status": "completed",
            "plugin": "ops", "command": "deploy", "created": 1_700_000_000.0, "updated": 1_700_000_001.0,
            "topic": "orchestration/chain/release/run_1/step-completed"}  # fmt: skip
    letter = ("l1", "nobody", [b"x"], "expired", "no worker", "m1", None, 1_700_000_000.0)
    return [(TASKS, [step]), (CIRCUITS, [("ops", "1.0.0", "open", "3 failures")]), (LETTERS, [letter])]


def test_a_batch_logs_one_event_per_row_in_order_and_a_resent_batch_none(store: str) -> None:
    recorder_process.write(_batch(), "rec-a:1")
    recorder_process.write(_batch(), "rec-a:1")  # the same batch, sent again after a restart
    logged = events.read()
    assert [e.topic for e in logged] == [
        "orchestration/chain/release/run_1/step-completed",
        "plugin/ops/circuit-breaker",
        "system/dead-letter",
    ]
    assert logged[1].payload == {"plugin": "ops", "state": "open", "reason": "3 failures"}
    assert logged[2].payload["reason"] == "expired" and logged[2].aggregate_id == "l1"
    recorder_process.write(_batch()[:2], "rec-a:2")  # a later batch about the same things is logged
    assert len(events.read()) == 5


def test_the_recorders_rounds_keep_the_event_log_within_its_retention(store: str) -> None:
    from arbiter.store import retention

    with state.writing():
        for n in range(30):
            events.append("system/dead-letter", "expired", "dead-letter", f"l{n}", {"n": n})
    keeping = retention.Retention(per_round=10).with_events({"max_rows": 12}, lambda text: 0)
    upkeep = retention.Upkeep(keeping)
    while upkeep._round():  # a bounded round at a time, as the recorder runs them
        pass
    kept = events.read()
    assert [e.payload["n"] for e in kept] == list(range(18, 30))
