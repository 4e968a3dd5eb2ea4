"""Why the state store cannot be used, in one line for people: which store, what is wrong, what to do.

Every way a store can fail to open, read or migrate (a damaged or truncated SQLite file, a directory
or an unreadable file in its place, a PostgreSQL server that cannot be reached) becomes one
:class:`StoreError`; the command line and the broker print it as it is, never a traceback.
SQLite's and PostgreSQL's own words say what is wrong; the hint says what to do about it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import peewee as pw

RECOVER = (
    "run `arbiter store check` to see what is wrong; to start afresh, move it and its -wal and -shm "
    "files away (README, 'Recovering the state store')"
)
START_AFRESH = (
    "stop the broker and move the file and its -wal and -shm files aside (the next command or "
    "broker start creates a fresh store); README, 'Recovering the state store', tells what is lost "
    "and how rows may be recovered from it"
)
PERMISSIONS = (
    "give the user running Arbiter read and write access to the file and its folder "
    "(SQLite keeps -wal and -shm files beside it)"
)
NOT_A_FILE = "move it away, or point `database` in configs/state.yaml at a file"
BUSY = "another process holds it locked; try again in a moment"
SERVER = "check that the server is running and reachable and that `database` in configs/state.yaml is right"
DRIVER = "install the PostgreSQL driver: pip install 'arbiter-router[postgres]'"
URL = "point `database` in configs/state.yaml at sqlite:///PATH or postgresql://USER@HOST/DB"

# Errors in how Arbiter talks to the database (bugs, or rows it refuses), not in the store itself:
# they keep their traceback.
NOT_STORE_FAILURES = (
    pw.IntegrityError,
    pw.ProgrammingError,
    pw.DataError,
    pw.NotSupportedError,
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
)
STORE_FAILURES = (pw.DatabaseError, pw.InterfaceError, sqlite3.DatabaseError)


class StoreError(RuntimeError):
    """The state store cannot be opened, read or migrated. ``where`` names it (its file, or its URL
    without the password), ``problem`` says what is wrong and ``hint`` what to do."""

    def __init__(self, where: str, problem: str, hint: str) -> None:
        self.where, self.problem, self.hint = where, one_line(problem), hint
        super().__init__(f"state store {where}: {self.problem}; {hint}")


def one_line(text: str) -> str:
    """The first line of a driver's message (psycopg2 adds a second, a question, on its own line)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def without_password(url: str) -> str:
    """A database URL safe to print: the password left out of the address and of the options."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}@{hostport}" if at else parts.netloc
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_store_failure(exc: BaseException) -> bool:
    """True for errors of the database itself (damaged, unreadable, unreachable, locked), not for
    those of a statement or a row."""
    return isinstance(exc, StoreError) or (isinstance(exc, STORE_FAILURES) and not isinstance(exc, NOT_STORE_FAILURES))


def failure(exc: BaseException, where: str, path: Path | None) -> StoreError:
    """The :class:`StoreError` saying what ``exc`` means for the store at ``where`` (``path``: its
    SQLite file; None for PostgreSQL)."""
    if isinstance(exc, StoreError):
        return exc
    if path is None:
        return _server_failure(exc, where)
    return _file_failure(exc, where, path)


def _file_failure(exc: BaseException, where: str, path: Path) -> StoreError:
    """A SQLite file's failure: what the file system says first (SQLite only says "unable to open
    database file" for a directory, a missing folder or a permission), then SQLite's own words."""
    text = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror or exc}: {exc.filename or path}"
    if path.is_dir():
        return StoreError(where, "is a directory, not a database file", NOT_A_FILE)
    if not path.parent.is_dir():
        return StoreError(where, f"its folder {path.parent} is not a directory", NOT_A_FILE)
    if isinstance(exc, PermissionError) or "readonly" in text or not _accessible(path):
        return StoreError(where, f"permission denied ({text})", PERMISSIONS)
    if "locked" in text or "busy" in text:
        return StoreError(where, text, BUSY)
    return StoreError(where, text, RECOVER)


def _accessible(path: Path) -> bool:
    """Whether this user may read and write the file (or create it) and write beside it."""
    folder_ok = os.access(path.parent, os.W_OK | os.X_OK)
    return folder_ok and (not path.exists() or os.access(path, os.R_OK | os.W_OK))


def _server_failure(exc: BaseException, where: str) -> StoreError:
    if isinstance(exc, pw.ImproperlyConfigured):
        return StoreError(where, one_line(str(exc)), DRIVER)
    if isinstance(exc, (RuntimeError, ValueError)):
        return StoreError(where, one_line(str(exc)), URL)  # an unknown scheme, a malformed URL
    text = one_line(str(exc))
    return StoreError(where, f"cannot connect: {text}" if "connect" in text.lower() else text, SERVER)
