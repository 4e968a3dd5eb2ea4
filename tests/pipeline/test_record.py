"""Recording decisions: synchronous for the CLI, batched off-thread for the broker."""

from __future__ import annotations

from arbiter.routing.pipeline import Request
from arbiter.store import database as state
from arbiter.store import decisions as record


def test_writer_batches_and_drains_on_close(shipped_router, tmp_path):
    state.open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        writer = record.DecisionWriter(max_batch=7)
        for i in range(50):
            data = shipped_router.route(Request(f"create a keycloak realm number {i}", request_id=f"r{i}")).to_json(
                False
            )
            writer.submit(data, origin="broker")
        writer.close()
        assert writer.written == 50 and writer.dropped == 0 and writer.errors == []
        rows = record.recent_decisions(100)
        assert len(rows) == 50
        assert {r["origin"] for r in rows} == {"broker"}
        assert all(r["primaryPlugin"] == "lobbi-platform-manager" for r in rows)
        record.update_outcome("r3", {"steps": [{"plugin": "lobbi-platform-manager", "result": "ok"}]}, True)
        row = state.RoutingDecision.get(state.RoutingDecision.request_id == "r3")
        assert row.success is True and row.outcome["steps"][0]["result"] == "ok" and row.completed_at
    finally:
        state.close_store()


def test_full_queue_counts_drops_instead_of_blocking(shipped_router, tmp_path):
    state.open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        writer = record.DecisionWriter(max_queue=1)
        data = shipped_router.route(Request("terraform for the vpc")).to_json(False)
        with state.database.atomic():  # hold the write lock so the writer cannot drain
            for _ in range(200):
                writer.submit(data)
        writer.close()
        assert writer.dropped > 0
        assert writer.written + writer.dropped == 200
    finally:
        state.close_store()


def test_rows_of_a_cached_decision_in_chunks(shipped_router, tmp_path):
    """Batches larger than one statement holds are split; repeats point at the first row."""
    state.open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        data = shipped_router.route(Request("create a keycloak realm", request_id="req_first")).to_json(False)
        template = record.RowTemplate.of(data, "broker")
        count = 2 * record.ROWS_PER_STATEMENT + 7
        ids = ["req_first", *(f"req_{i}" for i in range(count - 1))]
        rows = [record.entry_values(template.entry(rid, {"status": "success"}, True)) for rid in ids]
        assert record.insert_values(rows) == count
        assert state.RoutingDecision.select().count() == count
        assert record.insert_values(rows[-50:] + rows[:3], skip_existing=True) == 0  # re-sent rows are skipped
        assert state.RoutingDecision.select().count() == count
        first, repeat = record.find_decision("req_first"), record.find_decision(f"req_{count - 2}")
        assert repeat["outcome"]["decisionOf"] == "req_first" and "decisionOf" not in first["outcome"]
        assert (
            repeat["classification"] == first["classification"] and repeat["primaryPlugin"] == "lobbi-platform-manager"
        )
        listed = record.recent_decisions(50)  # fifty repeats of one decision, filled in from its first row
        assert len(listed) == 50 and all(d["classification"] == first["classification"] for d in listed)
        raw = state.RoutingDecision.get(state.RoutingDecision.request_id == f"req_{count - 2}")
        assert raw.classification is None  # stored once, on the first row
    finally:
        state.close_store()
