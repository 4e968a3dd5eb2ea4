"""The central state store: the seed's schema as Peewee models, versioned, SQLite or PostgreSQL.

SQLite (WAL mode) under ``.arbiter/state.db`` is the default; a ``postgresql://`` URL in
``configs/state.yaml`` lets several brokers share one store. The schema carries a version in
``arbiter_meta``; opening an older database migrates it forward in place, so an upgrade never
asks the operator to throw their history away.

JSON columns are text holding JSON so the same models work on both databases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import peewee as pw
from playhouse.db_url import connect
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from arbiter.store.errors import StoreError, failure, is_store_failure, without_password

SCHEMA_VERSION = 3
PG_CONNECT_TIMEOUT_S = 10  # libpq waits for an unreachable host as long as TCP does (minutes)
database = pw.DatabaseProxy()
_open_lock = threading.Lock()
_opened: tuple[str, Path | None] = ("(not opened)", None)  # the store last opened: its name and file


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    """A random 128-bit row id (the PRNG, not a system call). Random, so that a few leading
    characters tell rows apart: people pick dead letters by id prefix, like git commits."""
    return f"{random.getrandbits(128):032x}"


def ordered_id() -> str:
    """A 128-bit row id that sorts by creation time (microseconds since the epoch, then 72 bits
    from the PRNG), for the decision log, written once per routed request. Inserts then append
    to the end of the primary-key index; random ids landed all over the B-tree, so each row
    dirtied its own page (docs/PERFORMANCE.md)."""
    return f"{time.time_ns() // 1000:014x}{random.getrandbits(72):018x}"


class JSONField(pw.TextField):
    """JSON stored as text: portable across SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()

    def python_value(self, value: Any) -> Any:
        return None if value is None else orjson.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Meta(BaseModel):
    key = pw.CharField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "arbiter_meta"


class PluginRecord(BaseModel):
    id = pw.CharField(primary_key=True)
    name = pw.CharField(unique=True)
    version = pw.CharField()
    status = pw.CharField(constraints=[pw.Check("status IN ('active', 'inactive', 'error')")])
    health_score = pw.FloatField(default=1.0)
    last_heartbeat = pw.DateTimeField(null=True)
    metadata = JSONField(null=True)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)

    class Meta:
        table_name = "plugins"


class Task(BaseModel):
    id = pw.CharField(primary_key=True, default=new_id)
    session_id = pw.CharField(null=True)
    parent_task_id = pw.CharField(null=True)
    title = pw.TextField()
    description = pw.TextField(null=True)
    status = pw.CharField(
        index=True,
        constraints=[pw.Check("status IN ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled')")],
    )
    priority = pw.IntegerField(default=5)
    assigned_plugin = pw.CharField(null=True, index=True)
    assigned_agent = pw.CharField(null=True)
    result = JSONField(null=True)
    error = pw.TextField(null=True)
    metadata = JSONField(null=True)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)
    completed_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "tasks"


class AgentRecord(BaseModel):
    id = pw.CharField(primary_key=True)
    plugin_id = pw.CharField()
    name = pw.CharField()
    category = pw.CharField(null=True)
    status = pw.CharField(index=True, constraints=[pw.Check("status IN ('available', 'busy', 'offline')")])
    capabilities = JSONField(null=True)
    metrics = JSONField(null=True)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)

    class Meta:
        table_name = "agents"
        indexes = ((("plugin_id", "name"), True),)


class SharedContext(BaseModel):
    id = pw.CharField(primary_key=True, default=new_id)
    context_type = pw.CharField(index=True)
    key = pw.CharField()
    value = JSONField()
    owner_plugin = pw.CharField(null=True)
    access_level = pw.CharField(
        default="public", constraints=[pw.Check("access_level IN ('public', 'protected', 'private')")]
    )
    version = pw.IntegerField(default=1)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)
    expires_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "shared_context"
        indexes = ((("context_type", "key"), True),)


class RoutingDecision(BaseModel):
    id = pw.CharField(primary_key=True, default=ordered_id)
    request_id = pw.CharField(index=True)
    classification = JSONField(null=True)
    primary_plugin = pw.CharField(null=True)
    fallback_plugins = JSONField(null=True)
    collaboration_plan = JSONField(null=True)
    execution_strategy = pw.CharField(null=True)
    estimated_cost = pw.FloatField(null=True)
    estimated_duration = pw.IntegerField(null=True)
    actual_cost = pw.FloatField(null=True)
    actual_duration = pw.IntegerField(null=True)
    success = pw.BooleanField(null=True)
    created_at = pw.DateTimeField(default=now, index=True)
    completed_at = pw.DateTimeField(null=True)
    # Version 2: what explain and replays need beyond the seed's columns.
    user_input = pw.TextField(null=True)
    capability_scores = JSONField(null=True)
    agent_team = JSONField(null=True)
    rules_hash = pw.CharField(null=True)
    origin = pw.CharField(null=True)  # cli | broker
    timings = JSONField(null=True)
    outcome = JSONField(null=True)  # dispatch steps: primary, fallbacks, cache, dead letter

    class Meta:
        table_name = "routing_decisions"


class DistributedLock(BaseModel):
    resource_id = pw.CharField(primary_key=True)
    lock_holder = pw.CharField()
    lock_type = pw.CharField(constraints=[pw.Check("lock_type IN ('read', 'write')")])
    acquired_at = pw.DateTimeField(default=now)
    expires_at = pw.DateTimeField()
    metadata = JSONField(null=True)

    class Meta:
        table_name = "distributed_locks"


class Event(BaseModel):
    id = pw.CharField(primary_key=True, default=new_id)
    event_type = pw.CharField()
    aggregate_id = pw.CharField()
    aggregate_type = pw.CharField()
    payload = JSONField()
    metadata = JSONField(null=True)
    timestamp = pw.DateTimeField(default=now)

    class Meta:
        table_name = "events"
        indexes = ((("aggregate_type", "aggregate_id"), False),)


class DeadLetter(BaseModel):
    """A request the broker could not deliver, kept with its frames so it can be replayed."""

    id = pw.CharField(primary_key=True, default=new_id)
    message_id = pw.CharField(null=True, index=True)
    service = pw.CharField(index=True)
    reason = pw.CharField()
    detail = pw.TextField(null=True)
    count = pw.IntegerField(default=1)
    body = pw.BlobField()  # the request body frames, JSON list of latin-1 strings
    client = pw.CharField(null=True)
    first_at = pw.DateTimeField(default=now)
    last_at = pw.DateTimeField(default=now, index=True)
    replayed_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "dead_letters"


class DeadLetterRepeat(BaseModel):
    """A letter the broker handed in that was counted on an earlier one (same message, service and
    reason), kept by the id the broker gave it: a batch the broker sends again after its recorder
    died is then recognised and not counted twice. Only needed for a while (a day)."""

    id = pw.CharField(primary_key=True)
    letter = pw.ForeignKeyField(
        DeadLetter, column_name="letter_id", backref="repeats", on_delete="CASCADE", on_update="CASCADE"
    )
    at = pw.DateTimeField(default=now, index=True)

    class Meta:
        table_name = "dead_letter_repeats"


SEED_MODELS = [PluginRecord, Task, AgentRecord, SharedContext, RoutingDecision, DistributedLock, Event]
MODELS = [Meta, *SEED_MODELS, DeadLetter, DeadLetterRepeat]
V2_DECISION_COLUMNS = ("user_input", "capability_scores", "agent_team", "rules_hash", "origin", "timings", "outcome")


# ---------------------------------------------------------------- opening and migrating


SQLITE_PREFIX = "sqlite:///"


def sqlite_path(url: str, root: Path = Path(".")) -> Path | None:
    """The file of a SQLite URL (a relative path is under the project root); None for any other."""
    if not url.startswith(SQLITE_PREFIX) or ":memory:" in url:
        return None
    return (Path(root) / url[len(SQLITE_PREFIX) :].split("?", 1)[0]).resolve()


def describe(url: str, root: Path = Path(".")) -> str:
    """How messages name a store: its file, or its URL without the password."""
    path = sqlite_path(url, root)
    return str(path) if path is not None else without_password(url)


def resolve_url(url: str, root: Path) -> str:
    """Make a relative SQLite path relative to the project root, not the working directory."""
    if url.startswith(SQLITE_PREFIX) and not url.startswith(SQLITE_PREFIX + "/") and ":memory:" not in url:
        path = (Path(root) / url[len(SQLITE_PREFIX) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLITE_PREFIX + str(path)
    return url


def connect_url(url: str) -> pw.Database:
    """A database object for ``url`` (not yet connected), with the settings Arbiter uses."""
    if url.startswith("sqlite"):
        return connect(
            url,
            pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 5000, "foreign_keys": 1},
            check_same_thread=False,
        )
    if url.startswith("postgres") and "connect_timeout" not in url:
        return connect(url, connect_timeout=PG_CONNECT_TIMEOUT_S)
    return connect(url)


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


MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {1: _to_v2, 2: _to_v3}


def schema_version(db: pw.Database) -> int:
    if not db.table_exists("arbiter_meta"):
        return 1 if db.table_exists("routing_decisions") else 0
    row = Meta.get_or_none(Meta.key == "schema_version")
    return int(row.value) if row else 1


def _set_version(version: int) -> None:
    (
        Meta.insert(key="schema_version", value=str(version))
        .on_conflict(conflict_target=[Meta.key], update={Meta.value: str(version)})
        .execute()
    )


class SchemaTooNew(StoreError):
    """The store was written by a newer Arbiter; migrating it back is not possible."""


def open_store(url: str, root: Path = Path(".")) -> pw.Database:
    """Open the state database and bind the models to it, creating or migrating it first when
    needed. A current database is only read: commands that only look (``arbiter dlq list``,
    ``arbiter decisions``) never take the write lock from the broker.

    Raises :class:`StoreError` for every failure to open, read or migrate it, naming the store and
    what to do, so callers print one line instead of a driver's traceback."""
    global _opened
    with _open_lock:
        path = sqlite_path(url, root)
        _opened = (describe(url, root), path)
        try:
            db = connect_url(resolve_url(url, root))
        except (OSError, RuntimeError, ValueError, pw.PeeweeException) as exc:
            raise failure(exc, *_opened) from exc
        database.initialize(db)
        try:
            db.connect(reuse_if_open=True)
            if _checked_version(db) < SCHEMA_VERSION:
                with_retries(_upgrade, db)
        except StoreError:
            _close_quietly(db)
            raise
        except (OSError, pw.PeeweeException, sqlite3.Error) as exc:
            _close_quietly(db)
            raise failure(exc, *_opened) from exc
        return db


def _close_quietly(db: pw.Database) -> None:
    """Close a connection that failed: closing one to a damaged file may fail too."""
    with contextlib.suppress(Exception):
        db.close()


def store_failure(exc: BaseException) -> StoreError | None:
    """The :class:`StoreError` an exception means for the store last opened, when it is a failure
    of the database itself (say, a page found damaged while reading rows); None for any other."""
    return failure(exc, *_opened) if is_store_failure(exc) else None


def _checked_version(db: pw.Database) -> int:
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            _opened[0],
            f"schema version {version} is newer than this Arbiter knows (up to {SCHEMA_VERSION})",
            "upgrade Arbiter, or point `database` in configs/state.yaml at another database",
        )
    return version


def _upgrade(db: pw.Database) -> None:
    """Create or migrate in one write transaction; the version is read again inside it, so of two
    processes opening the same old database at once (a broker and its recorder) one does the work."""
    with writing():
        version = _checked_version(db)
        if version == 0:
            db.create_tables(MODELS, safe=True)
        elif version < SCHEMA_VERSION:
            db.create_tables([Meta], safe=True)
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
        _set_version(SCHEMA_VERSION)


def writing() -> Any:
    """A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE): a
    transaction that reads first and writes later fails at once with "database is locked" when
    another connection wrote in between, whatever busy_timeout says. Every write outside a plain
    insert goes through here, with :func:`with_retries`: the broker's recorder process and the
    command line (``arbiter dlq purge``, ``arbiter decisions prune``) write to the same database."""
    db = database.obj
    if isinstance(db, pw.SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return database.atomic()


def with_retries(write: Callable[..., Any], *args: Any, attempts: int = 4, pause_s: float = 0.05) -> Any:
    """Run a write again when the database was momentarily busy, so a lock wait loses no rows."""
    for attempt in range(attempts):
        try:
            return write(*args)
        except pw.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause_s * 2**attempt)


def close_store() -> None:
    if database.obj is not None and not database.obj.is_closed():
        database.obj.close()


class Reopening:
    """The store as a long-lived writer holds it (the broker's recorder): opened again before a
    write when it may no longer be the store the configuration names. That is after a failed
    write (a PostgreSQL server restarted drops the connection for good), and when the SQLite file
    changed under it (moved, replaced, truncated, or written by another process): SQLite would
    otherwise go on writing through its cache into a file that is gone or is no database any
    more, and the rows would be lost without a word. Opening again says what is wrong
    (:class:`StoreError`), and finds a file moved away replaced by a fresh store."""

    _UNSEEN = object()

    def __init__(self, url: str, root: Path) -> None:
        self._url, self._root = url, Path(root)
        self._path = sqlite_path(url, root)
        self._seen: object = self._UNSEEN  # the file as of the last good write
        self._open = False

    def ready(self) -> None:
        """Before a write: open the store unless the open one is still the file last written."""
        if self._open and self._seen == self._look():
            return
        self.close()
        open_store(self._url, self._root)
        self._open, self._seen = True, self._look()

    def wrote(self, ok: bool) -> None:
        """After a write: remember the file as it is now, or open again before the next one."""
        self._seen = self._look() if ok else self._UNSEEN

    def close(self) -> None:
        if self._open:
            self._open = False
            if database.obj is not None:
                _close_quietly(database.obj)

    def _look(self) -> object:
        """What tells the file apart from another, or from itself rewritten by someone else."""
        if self._path is None:
            return None
        try:
            stat = os.stat(self._path)
        except OSError:
            return object()  # gone: equal to nothing, so the store is opened again (created afresh)
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
