"""The schema's versions, and how an older store is brought forward in place.

The version is kept in ``arbiter_meta``; :func:`arbiter.store.database.open_store` runs the steps
from the store's version to :data:`SCHEMA_VERSION`, so an upgrade never asks the operator to throw
their history away.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from arbiter.store.models import (
    TASK_STATUS_CHECK,
    V2_DECISION_COLUMNS,
    DeadLetter,
    DeadLetterRepeat,
    DistributedLock,
    Event,
    LockFence,
    Meta,
    RoutingDecision,
    SharedContext,
    Task,
)

SCHEMA_VERSION = 8


def _migrator(db: pw.Database) -> Any:
    return SqliteMigrator(db) if isinstance(db, pw.SqliteDatabase) else PostgresqlMigrator(db)


def _to_v2(db: pw.Database) -> None:
    """Version 1 was the seed's schema as written; version 2 adds explain columns and dead letters."""
    existing = {c.name for c in db.get_columns("routing_decisions")}
    ops = [
        _migrator(db).add_column("routing_decisions", name, RoutingDecision._meta.fields[name])
        for name in V2_DECISION_COLUMNS
        if name not in existing
    ]
    with db.atomic():
        migrate(*ops)
        db.create_tables([DeadLetter])


def _to_v3(db: pw.Database) -> None:
    """Version 3 remembers the ids of repeated dead letters, so a re-sent batch does not count them twice."""
    db.create_tables([DeadLetterRepeat])


def _to_v4(db: pw.Database) -> None:
    """Version 4 lets tasks take the states of chain runs and their steps (skipped, timed-out,
    compensating, compensated, compensation-failed). A CHECK constraint cannot be altered in place
    on SQLite: the table is copied into a new one; PostgreSQL replaces the constraint. A store
    made before there were tasks gets the table as it is now."""
    if not db.table_exists("tasks"):
        db.create_tables([Task])
        return
    if isinstance(db, pw.SqliteDatabase):
        _rebuild_sqlite_tasks(db)
        return
    with db.atomic():
        db.execute_sql("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check")
        db.execute_sql(f"ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK ({TASK_STATUS_CHECK})")


def _rebuild_sqlite_tasks(db: pw.Database) -> None:
    class TaskV4(Task):
        class Meta:
            table_name = "tasks_v4"
            indexes = ()  # the message id's index comes with its column, in version 8

    old = {c.name for c in db.get_columns("tasks")}  # a later version's columns are added later
    columns = ", ".join(f'"{f.column_name}"' for f in Task._meta.sorted_fields if f.column_name in old)
    with db.atomic():
        db.create_tables([TaskV4])
        db.execute_sql(f'INSERT INTO "tasks_v4" ({columns}) SELECT {columns} FROM "tasks"')
        db.execute_sql('DROP TABLE "tasks"')
        db.execute_sql('ALTER TABLE "tasks_v4" RENAME TO "tasks"')


# Version 4's rows as version 5 holds them: an old event's topic is made of what it was about
# (``<aggregate type>/<aggregate id>/<event type>``), in the order the events happened; an old
# lease takes its resource's first fencing token.
_V4_EVENTS = """
INSERT INTO "events" ("topic", "event_type", "aggregate_type", "aggregate_id", "payload", "metadata", "timestamp")
SELECT SUBSTR(COALESCE("aggregate_type", '') || '/' || COALESCE("aggregate_id", '') || '/'
              || COALESCE("event_type", ''), 1, 255),
       COALESCE("event_type", ''), COALESCE("aggregate_type", ''), COALESCE("aggregate_id", ''),
       COALESCE("payload", 'null'), "metadata", COALESCE("timestamp", CURRENT_TIMESTAMP)
FROM "events_v4" ORDER BY "timestamp", "id"
"""
_V4_LOCKS = """
INSERT INTO "distributed_locks" ("resource_id", "lock_holder", "lock_type", "token", "acquired_at", "expires_at",
                                 "metadata")
SELECT "resource_id", "lock_holder", "lock_type", 1, COALESCE("acquired_at", "expires_at"), "expires_at", "metadata"
FROM "distributed_locks_v4"
"""
_V4_FENCES = """
INSERT INTO "lock_fences" ("resource_id", "last_token") SELECT DISTINCT "resource_id", 1 FROM "distributed_locks_v4"
"""


def _to_v5(db: pw.Database) -> None:
    """Version 5 is shared state: an event log numbered in the order events were committed, leases
    that several readers may hold on one resource, and the fencing counter of each resource. The
    seed's ``events`` and ``distributed_locks`` change their primary keys, which neither database
    alters in place: their rows are set aside, the tables made anew and the rows copied back.
    A store made before these tables existed gets them as they are now."""
    with db.atomic():
        db.create_tables([LockFence, SharedContext], safe=True)
        _remake(db, DistributedLock, [_V4_LOCKS, _V4_FENCES])
        _remake(db, Event, [_V4_EVENTS])


def _remake(db: pw.Database, model: type[pw.Model], copies: Sequence[str]) -> None:
    """Make ``model``'s table anew, running ``copies`` while the old rows wait in ``<table>_v4``.
    A temporary table, so the new table's constraints and indexes can take their usual names
    (PostgreSQL keeps a renamed table's index names) and nothing is left behind."""
    table = model._meta.table_name
    if not db.table_exists(table):
        db.create_tables([model])
        return
    aside = f"{table}_v4"
    db.execute_sql(f'CREATE TEMPORARY TABLE "{aside}" AS SELECT * FROM "{table}"')
    db.execute_sql(f'DROP TABLE "{table}"')
    db.create_tables([model])
    for sql in copies:
        db.execute_sql(sql)
    db.execute_sql(f'DROP TABLE "{aside}"')


def _to_v6(db: pw.Database) -> None:
    """Version 6 keeps each decision's trace id, so a row can be found from a trace and a trace
    from a row."""
    if "trace_id" in {c.name for c in db.get_columns("routing_decisions")}:
        return
    with db.atomic():  # the column's index comes with it
        migrate(_migrator(db).add_column("routing_decisions", "trace_id", RoutingDecision._meta.fields["trace_id"]))


def _to_v7(db: pw.Database) -> None:
    """Version 7 gives chain runs a lease (``tasks.lease_owner``, ``tasks.lease_expires``), so that
    brokers sharing a PostgreSQL store take over the runs of one that died."""
    existing = {c.name for c in db.get_columns("tasks")}
    ops = [
        _migrator(db).add_column("tasks", name, Task._meta.fields[name])
        for name in ("lease_owner", "lease_expires")
        if name not in existing
    ]
    with db.atomic():
        migrate(*ops)


def _to_v8(db: pw.Database) -> None:
    """Version 8 keeps the messageId of the request that started a chain run (``tasks.message_id``,
    unique where set), so that a start sent again answers with that run instead of a second one."""
    with db.atomic():
        if "message_id" not in {c.name for c in db.get_columns("tasks")}:
            migrate(_migrator(db).add_column("tasks", "message_id", Task._meta.fields["message_id"]))
        db.execute_sql(
            'CREATE UNIQUE INDEX IF NOT EXISTS "tasks_message_id" ON "tasks" ("message_id") '
            'WHERE "message_id" IS NOT NULL'
        )


MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {
    1: _to_v2,
    2: _to_v3,
    3: _to_v4,
    4: _to_v5,
    5: _to_v6,
    6: _to_v7,
    7: _to_v8,
}


def schema_version(db: pw.Database) -> int:
    if not db.table_exists("arbiter_meta"):
        return 1 if db.table_exists("routing_decisions") else 0
    row = Meta.get_or_none(Meta.key == "schema_version")
    return int(row.value) if row else 1


def set_version(version: int) -> None:
    (
        Meta.insert(key="schema_version", value=str(version))
        .on_conflict(conflict_target=[Meta.key], update={Meta.value: str(version)})
        .execute()
    )
