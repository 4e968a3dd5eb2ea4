"""The state store: fresh and older databases open, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid

import peewee as pw
import pytest

from arbiter.store import database as state
from arbiter.store import decisions as record

SEED_V1_DECISIONS = """
CREATE TABLE routing_decisions (
  id TEXT PRIMARY KEY, request_id TEXT NOT NULL, classification JSON, primary_plugin TEXT,
  fallback_plugins JSON, collaboration_plan JSON, execution_strategy TEXT, estimated_cost REAL,
  estimated_duration INTEGER, actual_cost REAL, actual_duration INTEGER, success BOOLEAN,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, completed_at TIMESTAMP)
"""


def test_fresh_sqlite_database_is_wal_and_current(tmp_path):
    db = state.open_store("sqlite:///.arbiter/state.db", tmp_path)
    try:
        assert (tmp_path / ".arbiter" / "state.db").exists()
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert state.schema_version(db) == state.SCHEMA_VERSION
        for model in state.MODELS:
            assert db.table_exists(model._meta.table_name)
        state.RoutingDecision.create(
            request_id="r1", primary_plugin="p", rules_hash="abc", capability_scores=[{"a": 1}]
        )
        row = state.RoutingDecision.get(state.RoutingDecision.request_id == "r1")
        assert row.capability_scores == [{"a": 1}]
    finally:
        state.close_store()


def test_seed_schema_database_is_migrated_without_losing_rows(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute(SEED_V1_DECISIONS)
    con.execute(
        "INSERT INTO routing_decisions (id, request_id, primary_plugin) VALUES ('d1', 'req1', 'fastapi-backend')"
    )
    con.commit()
    con.close()
    db = state.open_store(f"sqlite:///{path}")
    try:
        assert state.schema_version(db) == 2
        old = state.RoutingDecision.get_by_id("d1")
        assert (old.request_id, old.primary_plugin, old.rules_hash) == ("req1", "fastapi-backend", None)
        state.RoutingDecision.create(request_id="req2", rules_hash="h")
        assert state.RoutingDecision.select().count() == 2
        assert db.table_exists("dead_letters")
    finally:
        state.close_store()
    # Opening again is a no-op.
    db = state.open_store(f"sqlite:///{path}")
    assert state.RoutingDecision.select().count() == 2
    state.close_store()


def test_newer_schema_is_refused_clearly(tmp_path):
    path = tmp_path / "new.db"
    state.open_store(f"sqlite:///{path}")
    state.Meta.update(value="99").execute()
    state.close_store()
    with pytest.raises(state.SchemaTooNew, match="version 99"):
        state.open_store(f"sqlite:///{path}")
    state.close_store()


def _postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=5432, dbname="test", user="postgres", connect_timeout=2).close()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _postgres_available() and not os.environ.get("CI"), reason="no PostgreSQL on 127.0.0.1:5432")
def test_postgresql_store_fresh_and_migrated():
    import psycopg2

    schema = "arb_" + uuid.uuid4().hex[:8]
    con = psycopg2.connect(host="127.0.0.1", port=5432, dbname="test", user="postgres")
    con.autocommit = True
    cur = con.cursor()
    cur.execute(f"CREATE SCHEMA {schema}")
    cur.execute(f"SET search_path TO {schema}")
    cur.execute(SEED_V1_DECISIONS.replace("JSON", "TEXT").replace("BOOLEAN", "BOOLEAN"))
    cur.execute("INSERT INTO routing_decisions (id, request_id) VALUES ('d1', 'req1')")
    try:
        url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
        db = state.open_store(url)
        assert isinstance(db, pw.PostgresqlDatabase)
        assert state.schema_version(db) == 2
        assert state.RoutingDecision.get_by_id("d1").request_id == "req1"
        state.RoutingDecision.create(request_id="req2", timings={"classify_us": 10})
        assert state.RoutingDecision.select().count() == 2
        # the broker's batched path: a decision's row converted once, many rows per INSERT;
        # a repeat of a cached decision stores only its own columns and points at the first row
        decision = {
            "requestId": "req3",
            "userInput": "x",
            "classification": {"domain": ["api"]},
            "routingDecision": {"primaryPlugin": "p", "fallbackPlugins": ["q"]},
        }
        template = record.RowTemplate.of(decision, "broker")
        rows = [
            record.entry_values(template.entry("req3", {"status": "success", "steps": []}, True)),
            record.entry_values(template.entry("req4", {"status": "error", "steps": []}, False)),
        ]
        assert record.insert_values(rows) == 2
        assert record.insert_values(rows, skip_existing=True) == 0  # a re-sent batch (the recorder)
        stored = record.find_decision("req3")
        assert stored["classification"] == {"domain": ["api"]} and stored["fallbackPlugins"] == ["q"]
        assert stored["outcome"]["status"] == "success" and stored["success"] is True
        repeat = record.find_decision("req4")
        assert repeat["classification"] == {"domain": ["api"]} and repeat["success"] is False
        assert repeat["outcome"]["decisionOf"] == "req3"
        assert state.RoutingDecision.select().count() == 4
        state.close_store()
    finally:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


def test_decision_log_ids_are_unique_and_sort_by_creation_time():
    """Indexed ids that grow with time keep the decision log's inserts at the end of the B-tree."""
    from arbiter.routing.pipeline import new_request_id

    for make, length in ((state.ordered_id, 32), (new_request_id, 25)):
        batch = [make() for _ in range(5000)]
        assert len(set(batch)) == len(batch) and {len(i) for i in batch} == {length}
        earlier = make()
        time.sleep(0.002)
        assert make() > earlier
    assert abs(int(state.ordered_id()[:14], 16) - time.time_ns() // 1000) < 1_000_000
