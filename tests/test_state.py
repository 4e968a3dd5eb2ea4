"""The state store: fresh and older databases open, on SQLite and PostgreSQL; opening a current
one writes nothing; the decision log's retention."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Iterator

import peewee as pw
import pytest

from arbiter.store import database as state
from arbiter.store import decisions as record
from arbiter.store import migrations, models, retention

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
        assert migrations.schema_version(db) == migrations.SCHEMA_VERSION
        for model in models.MODELS:
            assert model.table_exists(), model.__name__
        models.RoutingDecision.create(
            request_id="r1", primary_plugin="p", rules_hash="abc", capability_scores=[{"a": 1}]
        )
        row = models.RoutingDecision.get(models.RoutingDecision.request_id == "r1")
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
        assert migrations.schema_version(db) == migrations.SCHEMA_VERSION
        old = models.RoutingDecision.get_by_id("d1")
        assert (old.request_id, old.primary_plugin, old.rules_hash) == ("req1", "fastapi-backend", None)
        models.RoutingDecision.create(request_id="req2", rules_hash="h")
        assert models.RoutingDecision.select().count() == 2
        assert db.table_exists("dead_letters") and db.table_exists("dead_letter_repeats")
    finally:
        state.close_store()
    # Opening again is a no-op.
    db = state.open_store(f"sqlite:///{path}")
    assert models.RoutingDecision.select().count() == 2
    state.close_store()


def test_newer_schema_is_refused_clearly(tmp_path):
    path = tmp_path / "new.db"
    state.open_store(f"sqlite:///{path}")
    models.Meta.update(value="99").execute()
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
        assert migrations.schema_version(db) == migrations.SCHEMA_VERSION
        assert models.RoutingDecision.get_by_id("d1").request_id == "req1"
        models.RoutingDecision.create(request_id="req2", timings={"classify_us": 10})
        assert models.RoutingDecision.select().count() == 2
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
        assert models.RoutingDecision.select().count() == 4
        _age_decisions(["req1", "req2"], days=40)
        assert retention.prune(dt.timedelta(days=30), dry_run=True) == 2
        assert retention.prune(dt.timedelta(days=30), keep=1) == 3
        assert [d["requestId"] for d in record.recent_decisions(10)] == ["req4"]
        state.close_store()
    finally:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


def test_decision_log_ids_are_unique_and_sort_by_creation_time():
    """Indexed ids that grow with time keep the decision log's inserts at the end of the B-tree."""
    from arbiter.routing.pipeline import new_request_id

    for make, length in ((models.ordered_id, 32), (new_request_id, 25)):
        batch = [make() for _ in range(5000)]
        assert len(set(batch)) == len(batch) and {len(i) for i in batch} == {length}
        earlier = make()
        time.sleep(0.002)  # the behaviour under test: an id made later (2 ms, past the microsecond clock) sorts after
        assert make() > earlier
    assert abs(int(models.ordered_id()[:14], 16) - time.time_ns() // 1000) < 1_000_000


def test_opening_a_current_database_writes_nothing(tmp_path):
    """Read-only commands (``arbiter dlq list``, ``arbiter decisions``) open the store while the
    broker writes: they must not wait for, or take, the write lock."""
    path = tmp_path / "state.db"
    state.open_store(f"sqlite:///{path}")
    state.close_store()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        db = state.open_store(f"sqlite:///{path}")
        opened_in = time.monotonic() - started
        assert migrations.schema_version(db) == migrations.SCHEMA_VERSION and models.DeadLetter.select().count() == 0
        assert db.connection().total_changes == 0, "opening a current database wrote to it"
        # had it asked for the lock, it would have waited out SQLite's busy timeout (and then failed)
        busy_timeout_s = db.execute_sql("PRAGMA busy_timeout").fetchone()[0] / 1000
        assert opened_in < busy_timeout_s, f"opening took {opened_in:.1f}s: it waited for the write lock"
    finally:
        state.close_store()
        writer.execute("ROLLBACK")
        writer.close()


def test_a_version_2_database_gains_the_repeat_ids(tmp_path):
    path = tmp_path / "v2.db"
    state.open_store(f"sqlite:///{path}")
    state.database.obj.drop_tables([models.DeadLetterRepeat])
    models.Meta.update(value="2").execute()
    models.DeadLetter.create(service="svc", reason="expired", body=b"[]")
    state.close_store()
    db = state.open_store(f"sqlite:///{path}")
    try:
        assert migrations.schema_version(db) == migrations.SCHEMA_VERSION and db.table_exists("dead_letter_repeats")
        assert models.DeadLetter.select().count() == 1
    finally:
        state.close_store()


# ---------------------------------------------------------------- retention


@pytest.fixture
def decision_log(tmp_path: Path) -> Iterator[list[str]]:
    """Ten decisions, one a day: the request id of the newest first."""
    state.open_store(f"sqlite:///{tmp_path / 'state.db'}")
    ids = [f"req{day}" for day in range(10)]
    for day, request_id in enumerate(ids):
        models.RoutingDecision.create(request_id=request_id, created_at=models.now() - dt.timedelta(days=day, hours=1))
    yield ids
    state.close_store()


def _kept() -> list[str]:
    return [
        row.request_id for row in models.RoutingDecision.select().order_by(models.RoutingDecision.created_at.desc())
    ]


def _age_decisions(request_ids: list[str], days: float) -> None:
    past = models.now() - dt.timedelta(days=days)
    models.RoutingDecision.update(created_at=past).where(models.RoutingDecision.request_id.in_(request_ids)).execute()


def test_prune_by_age_by_count_and_both(decision_log):
    assert retention.prune(dt.timedelta(days=7), dry_run=True) == 3
    assert _kept() == decision_log  # a dry run deletes nothing
    assert retention.prune(keep=8, dry_run=True) == 2
    assert retention.prune(dt.timedelta(days=7), keep=5, dry_run=True) == 5  # the larger set of the two
    assert retention.prune(dt.timedelta(days=7)) == 3
    assert _kept() == decision_log[:7]
    assert retention.prune(keep=5) == 2
    assert _kept() == decision_log[:5]
    assert retention.prune(dt.timedelta(days=30), keep=5) == 0
    assert retention.prune() == 0  # no limit, nothing to do
    assert retention.prune(keep=0) == 5 and _kept() == []


def test_prune_stops_at_its_limit_oldest_first(decision_log, monkeypatch):
    monkeypatch.setattr(retention, "DELETE_CHUNK", 2)  # several transactions per round
    assert retention.prune(keep=1, limit=5) == 5
    assert _kept() == decision_log[:5]
    assert retention.prune(keep=1, limit=5, dry_run=True) == 4
    assert retention.prune(keep=1, limit=5) == 4 and _kept() == decision_log[:1]


def test_prune_takes_the_write_lock_and_waits_out_a_busy_database(decision_log, monkeypatch):
    entered = []
    writing = state.writing

    def busy_once():
        entered.append(True)
        if len(entered) == 1:
            raise pw.OperationalError("database is locked")
        return writing()

    monkeypatch.setattr(state, "writing", busy_once)
    assert retention.prune(keep=4) == 6 and len(entered) == 2


def test_retention_reads_the_state_config():
    from arbiter.dsl.durations import parse_ms

    configured = retention.Retention.of({"max_age": "30d", "max_rows": 1000}, parse_ms)
    assert configured.max_age == dt.timedelta(days=30) and configured.max_rows == 1000 and configured.active
    assert not retention.Retention.of({"max_age": None, "max_rows": None}, parse_ms).active
    assert retention.Retention.from_json(configured.to_json()) == configured


def test_the_state_config_validates_retention(tmp_path):
    from arbiter.project.snapshot import build_snapshot

    (tmp_path / "configs").mkdir()
    state_yaml = tmp_path / "configs" / "state.yaml"
    state_yaml.write_text("retention:\n  max_rows: 5\n")
    assert build_snapshot(tmp_path).configs["state"]["retention"] == {"max_age": "30d", "max_rows": 5}
    state_yaml.write_text("retention:\n  max_age: 30 days\n  max_rows: 0\n")
    errors = [d.format() for d in build_snapshot(tmp_path).errors]
    assert any("retention.max_age" in e and "not a duration" in e for e in errors), errors
    assert any("retention.max_rows" in e and "min value is 1" in e for e in errors), errors
