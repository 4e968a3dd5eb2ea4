"""Recording decisions: synchronous for one, through a recorder process for many (``arbiter route
--input``, as the broker does)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from arbiter.cli import main
from arbiter.routing.pipeline import Request
from arbiter.store import database as state
from arbiter.store import decisions as record
from arbiter.store import models
from arbiter.store.recorder import Recorder


def test_recorder_batches_decisions_and_drains_on_close(shipped_router, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    state.open_store(url)
    try:
        writer = Recorder(url, tmp_path, max_batch=7)
        for i in range(50):
            data = shipped_router.route(Request(f"create a keycloak realm number {i}", request_id=f"r{i}")).to_json(
                False
            )
            writer.submit_decision(data, origin="cli")
            writer.flush_if_due()
        writer.close()
        assert writer.written == 50 and writer.dropped == 0 and writer.errors == []
        rows = record.recent_decisions(100)
        assert len(rows) == 50
        assert {r["origin"] for r in rows} == {"cli"}
        assert all(r["primaryPlugin"] == "lobbi-platform-manager" and r["classification"] for r in rows)
    finally:
        state.close_store()


def test_full_queue_counts_drops_instead_of_blocking(shipped_router, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    state.open_store(url)
    try:
        writer = Recorder(url, tmp_path, max_queue=1)
        data = shipped_router.route(Request("terraform for the vpc")).to_json(False)
        for _ in range(200):  # no flush: nothing is confirmed, so only one row may wait
            writer.submit_decision(data, origin="cli")
        writer.close()
        assert writer.dropped == 199 and writer.written == 1
        assert models.RoutingDecision.select().count() == 1
    finally:
        state.close_store()


def test_route_input_records_every_decision(project):
    lines = [json.dumps({"id": f"batch-{i}", "text": "create a keycloak realm"}) for i in range(30)]
    result = CliRunner().invoke(main, ["--root", str(project), "route", "--input", "-"], input="\n".join(lines))
    assert result.exit_code == 0, result.output
    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        rows = record.recent_decisions(100)
        assert sorted(r["requestId"] for r in rows) == sorted(f"batch-{i}" for i in range(30))
        assert {r["origin"] for r in rows} == {"cli"}
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
        assert models.RoutingDecision.select().count() == count
        assert record.insert_values(rows[-50:] + rows[:3], skip_existing=True) == 0  # re-sent rows are skipped
        assert models.RoutingDecision.select().count() == count
        first, repeat = record.find_decision("req_first"), record.find_decision(f"req_{count - 2}")
        assert repeat["outcome"]["decisionOf"] == "req_first" and "decisionOf" not in first["outcome"]
        assert (
            repeat["classification"] == first["classification"] and repeat["primaryPlugin"] == "lobbi-platform-manager"
        )
        listed = record.recent_decisions(50)  # fifty repeats of one decision, filled in from its first row
        assert len(listed) == 50 and all(d["classification"] == first["classification"] for d in listed)
        raw = models.RoutingDecision.get(models.RoutingDecision.request_id == f"req_{count - 2}")
        assert raw.classification is None  # stored once, on the first row
    finally:
        state.close_store()
