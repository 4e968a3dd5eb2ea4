"""Opening the state store, SQLite or PostgreSQL, and writing to it safely.

SQLite (WAL mode) under ``.arbiter/state.db`` is the default; a ``postgresql://`` URL in
``configs/state.yaml`` lets several brokers share one store. Opening an older store migrates it
forward in place (:mod:`.migrations`); the models are in :mod:`.models`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import peewee as pw
from playhouse.db_url import connect

from arbiter.store import models
from arbiter.store.errors import StoreError, failure, is_store_failure, without_password
from arbiter.store.migrations import MIGRATIONS, SCHEMA_VERSION, schema_version, set_version

PG_CONNECT_TIMEOUT_S = 10  # libpq waits for an unreachable host as long as TCP does (minutes)
database = models.database
_open_lock = threading.Lock()
_opened: tuple[str, Path | None] = ("(not opened)", None)  # the store last opened: its name and file


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
            db.create_tables(models.MODELS, safe=True)
        elif version < SCHEMA_VERSION:
            db.create_tables([models.Meta], safe=True)
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
        set_version(SCHEMA_VERSION)


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
