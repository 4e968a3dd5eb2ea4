"""Schema version 6: the decision log's ``trace_id`` column, added in place to a version-5 store
(SQLite and PostgreSQL), and kept per request."""

from __future__ import annotations

import peewee as pw

from arbiter.store import database as state
from arbiter.store import decisions as record
from arbiter.store import migrations, models


def test_a_version_5_store_gets_the_trace_column_and_keeps_its_rows(store: str) -> None:
    record.record_decision({"requestId": "req_old", "userInput": "before"}, "cli")
    db = state.database.obj
    if isinstance(db, pw.SqliteDatabase):
        db.execute_sql('DROP INDEX IF EXISTS "routingdecision_trace_id"')
        db.execute_sql('DROP INDEX IF EXISTS "routing_decisions_trace_id"')
    db.execute_sql('ALTER TABLE "routing_decisions" DROP COLUMN "trace_id"')
    models.Meta.update(value="5").where(models.Meta.key == "schema_version").execute()
    state.close_store()
    db = state.open_store(store)
    assert migrations.schema_version(db) == migrations.SCHEMA_VERSION
    assert "trace_id" in {c.name for c in db.get_columns("routing_decisions")}
    assert record.find_decision("req_old")["traceId"] is None
    template = record.RowTemplate.of({"requestId": "req_new", "userInput": "after"}, "broker")
    record.insert_values([record.entry_values(template.entry("req_new", {"status": "success"}, True, "ab" * 16))])
    assert record.find_decision("req_new")["traceId"] == "ab" * 16
