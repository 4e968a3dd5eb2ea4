"""The schema's versions, and how an older store is brought forward in place.

The version is kept in ``arbiter_meta``; :func:`arbiter.store.database.open_store` runs the steps
from the store's version to :data:`SCHEMA_VERSION`, so an upgrade never asks the operator to throw
their history away.
"""

from __future__ import annotations

from typing import Any, Callable

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from arbiter.store.models import (
    TASK_STATUS_CHECK,
    V2_DECISION_COLUMNS,
    DeadLetter,
    DeadLetterRepeat,
    Meta,
    RoutingDecision,
    Task,
)

SCHEMA_VERSION = 4


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

    columns = ", ".join(f'"{field.column_name}"' for field in Task._meta.sorted_fields)
    with db.atomic():
        db.create_tables([TaskV4])
        db.execute_sql(f'INSERT INTO "tasks_v4" ({columns}) SELECT {columns} FROM "tasks"')
        db.execute_sql('DROP TABLE "tasks"')
        db.execute_sql('ALTER TABLE "tasks_v4" RENAME TO "tasks"')


MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {1: _to_v2, 2: _to_v3, 3: _to_v4}


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
