"""Whether the state store is sound (``arbiter store check``): its integrity, schema version,
tables with their row counts and size, and every problem found, without changing it.

A SQLite file is opened read-only (nothing is created, migrated or locked for writing) and
checked with SQLite's own ``quick_check`` and ``integrity_check``; a PostgreSQL store is checked
for a connection and a schema version this Arbiter knows (the server keeps its own pages sound).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import peewee as pw

from arbiter.store import database as state
from arbiter.store import migrations, models
from arbiter.store.errors import NOT_A_FILE, PERMISSIONS, RECOVER, SERVER, START_AFRESH, failure, one_line

CHECK_LINES = 20  # problems each SQLite check lists at most
SQLITE_CHECKS = ("quick_check", "integrity_check")


@dataclass
class Report:
    """What ``arbiter store check`` found. ``problems`` empty means sound; ``hint`` says what to do
    when it is not."""

    kind: str  # sqlite | postgresql
    location: str  # the file, or the URL without its password
    exists: bool = True
    size_bytes: int | None = None
    wal_bytes: int | None = None
    schema_version: int | None = None
    integrity: dict[str, list[str]] = field(default_factory=dict)  # check -> its lines ("ok" when sound)
    tables: dict[str, int | None] = field(default_factory=dict)  # table -> rows (None: unreadable)
    problems: list[str] = field(default_factory=list)
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str, hint: str = START_AFRESH) -> None:
        self.problems.append(one_line(text))
        self.hint = self.hint or hint

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "kind": self.kind,
            "location": self.location,
            "exists": self.exists,
            "sizeBytes": self.size_bytes,
            "walBytes": self.wal_bytes,
            "schemaVersion": self.schema_version,
            "currentSchemaVersion": migrations.SCHEMA_VERSION,
            "integrity": self.integrity,
            "tables": self.tables,
            "problems": self.problems,
            "hint": self.hint,
        }


def check_store(url: str, root: Path = Path(".")) -> Report:
    """Check the store ``url`` names (a relative SQLite path is under ``root``)."""
    path = state.sqlite_path(url, root)
    if path is not None:
        return _check_sqlite(path)
    report = Report("postgresql" if url.startswith("postgres") else url.split(":", 1)[0], state.describe(url, root))
    if report.kind != "postgresql":
        report.problem(f"not a database Arbiter can check: {report.location}", "use sqlite:///PATH or postgresql://")
        return report
    _check_server(url, report)
    return report


# ---------------------------------------------------------------- SQLite


def _check_sqlite(path: Path) -> Report:
    report = Report("sqlite", str(path))
    if path.parent.exists() and not path.parent.is_dir():
        report.problem(f"its folder {path.parent} is not a directory", NOT_A_FILE)
        return report
    if not path.exists():
        report.exists = False  # sound: the first command that records creates it
        return report
    if path.is_dir():
        report.problem("is a directory, not a database file", NOT_A_FILE)
        return report
    if not os.access(path, os.R_OK):
        report.problem("permission denied: this user cannot read the file", PERMISSIONS)
        return report
    report.size_bytes = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    report.wal_bytes = wal.stat().st_size if wal.exists() else None
    try:
        with _read_only(path) as db:
            if _run_sqlite_checks(db, report):
                _read_contents(db, report)
    except (pw.PeeweeException, sqlite3.Error, OSError) as exc:
        found = failure(exc, str(path), path)
        report.problem(found.problem, START_AFRESH if found.hint == RECOVER else found.hint)
    return report


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[pw.SqliteDatabase]:
    """The file opened read-only: no pragma that writes, no schema created, nothing migrated."""
    db = pw.SqliteDatabase(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5)
    db.connect()
    try:
        yield db
    finally:
        db.close()


def _run_sqlite_checks(db: pw.SqliteDatabase, report: Report) -> bool:
    """SQLite's quick_check (pages and records) then integrity_check (also every index against its
    table); their first lines name what is damaged. False when the file cannot be read at all."""
    for check in SQLITE_CHECKS:
        try:
            rows = db.execute_sql(f"PRAGMA {check}({CHECK_LINES})").fetchall()
        except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
            report.integrity[check] = [one_line(str(exc))]
            report.problem(one_line(str(exc)))
            return False
        lines = [line for row in rows for line in str(row[0]).splitlines() if not line.startswith("*** in database")]
        report.integrity[check] = lines
        if lines != ["ok"]:
            more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
            report.problem(f"{check}: {'; '.join(lines[:3])}{more}")
            return True  # integrity_check would only say it again, at length
    return True


# ---------------------------------------------------------------- PostgreSQL


def _check_server(url: str, report: Report) -> None:
    db: pw.Database | None = None
    try:
        db = state.connect_url(url)
        db.connect()
        _read_contents(db, report)
        report.size_bytes = sum(_relation_size(db, table) for table in report.tables)
    except (pw.PeeweeException, RuntimeError, ValueError) as exc:
        report.problem(failure(exc, report.location, None).problem, SERVER)
    finally:
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()


def _relation_size(db: pw.Database, table: str) -> int:
    row = db.execute_sql("SELECT pg_total_relation_size(%s::regclass)", (f'"{table}"',)).fetchone()
    return int(row[0] or 0)


# ---------------------------------------------------------------- both


def _read_contents(db: pw.Database, report: Report) -> None:
    """The schema version and every table's row count; a table that cannot be read is a problem."""
    tables = sorted(db.get_tables())
    report.schema_version = _schema_version(db, tables)
    if report.schema_version > migrations.SCHEMA_VERSION:
        report.problem(
            f"schema version {report.schema_version} is newer than this Arbiter knows"
            f" (up to {migrations.SCHEMA_VERSION})",
            "upgrade Arbiter",
        )
    for table in tables:
        try:
            report.tables[table] = int(db.execute_sql(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
            report.tables[table] = None
            report.problem(f"table {table}: {exc}")
    if report.schema_version == migrations.SCHEMA_VERSION:
        missing = sorted({model._meta.table_name for model in models.MODELS} - set(tables))
        if missing:
            report.problem(f"missing table(s) of schema version {migrations.SCHEMA_VERSION}: {', '.join(missing)}")


def _schema_version(db: pw.Database, tables: list[str]) -> int:
    """As :func:`migrations.schema_version` reads it, without binding the models to this connection."""
    if "arbiter_meta" not in tables:
        return 1 if "routing_decisions" in tables else 0
    param = "?" if isinstance(db, pw.SqliteDatabase) else "%s"
    row = db.execute_sql(f"SELECT value FROM arbiter_meta WHERE key = {param}", ("schema_version",)).fetchone()
    return int(row[0]) if row else 1
