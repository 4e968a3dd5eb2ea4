"""Shared context: JSON values plugins and runs share through the broker, in the seed's
``shared_context`` table, each change logged in the event log in the same transaction.

An entry lives in a scope (``global``, ``plugin:<name>``, ``run:<id>``, ``session:<id>``) under
a key, and belongs to whoever created it. Its access level says who else may touch it:
``public`` (anyone reads and writes), ``protected`` (anyone reads, only the owner writes) or
``private`` (only the owner). To anyone else a private entry is absent: reading, deleting or
writing it answers NOT_FOUND, as for a key nobody created, and listings leave it out. FORBIDDEN
would tell them the key is in use and by what kind of entry; NOT_FOUND tells them nothing more
than a key that is taken (a create cannot succeed, whatever the answer says).

Every entry has a version, 1 when created and one more per write, so writers can compare and
set: a write given the version it read is refused (CONFLICT, with the entry as it is now) when
someone wrote in between. The check is made by the write itself: an ``UPDATE ... WHERE version =``
that changes no row, or an ``INSERT`` the unique index turns away, so it holds between processes
and between brokers sharing one PostgreSQL. Entries may expire (``ttl``): an expired entry is
absent everywhere, replaced by the next write of its key and removed by :func:`purge_expired`.

Each change appends one event (topic ``state/<scope>/change``, type ``put`` or ``delete``) whose
payload is the whole resulting entry or the deletion, so the log alone rebuilds the table
(:func:`rebuild_from_log`). A write may carry a fencing token (``fence``) of a lock from
:mod:`.locks`: it is refused (STALE_FENCE) once a later token was granted on that resource.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, Callable, Iterator

import peewee as pw

from arbiter.store import database as state
from arbiter.store import events, models
from arbiter.store.entries import ACCESS_LEVELS as ACCESS_LEVELS  # what callers of this module name
from arbiter.store.entries import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    Entry,
    StateError,
    as_stored,
    check_access,
    check_address,
    check_caller,
    check_fence,
    check_scope,
    check_ttl,
)
from arbiter.store.entries import STALE_FENCE as STALE_FENCE

Row = models.SharedContext
clock: Callable[[], dt.datetime] = models.now  # tests move time by replacing it

WRITE_ATTEMPTS = 20  # a write finding its row changed under it reads it again, this often at most
MERGE_ATTEMPTS = 8  # a merge refused because someone wrote in between starts over, this often at most
PURGE_CHUNK = 500  # expired entries removed per transaction
AGGREGATE = "context"
ROW_ID = "row"  # event metadata: the row the entry is kept in, so a rebuilt table is the same table


# ---------------------------------------------------------------- rows and who may see them


def _entry(row: models.SharedContext) -> Entry:
    return Entry(
        row.context_type,
        row.key,
        row.value,
        row.owner_plugin or "",
        row.access_level,
        int(row.version),
        row.created_at,
        row.updated_at,
        row.expires_at,
    )


def _row(scope: str, key: str, *, for_update: bool = False) -> models.SharedContext | None:
    """The row of a key, expired or not; locked until commit on PostgreSQL when it is to be written."""
    query = Row.select().where((Row.context_type == scope) & (Row.key == key))
    if for_update and isinstance(state.database.obj, pw.PostgresqlDatabase):
        query = query.for_update()
    return query.first()


def _live(row: models.SharedContext | None) -> Entry | None:
    """The entry of a row, None when there is none or it expired (to be replaced like none)."""
    entry = None if row is None else _entry(row)
    return None if entry is None or entry.expired(clock()) else entry


def _absent(scope: str, key: str) -> StateError:
    return StateError(NOT_FOUND, f"no entry {key!r} in {scope}")


def _readable(row: models.SharedContext | None, caller: str) -> Entry | None:
    """The entry as ``caller`` sees it: None when there is none, it expired, or it is private to
    someone else."""
    entry = _live(row)
    if entry is None or (entry.access == "private" and entry.owner != caller):
        return None
    return entry


def _authorise_write(entry: Entry, caller: str, access: str | None) -> None:
    if entry.owner == caller:
        return
    if entry.access == "private":
        raise _absent(entry.scope, entry.key)
    if entry.access == "protected":
        raise StateError(FORBIDDEN, f"{entry.key!r} in {entry.scope} is protected: only {entry.owner} writes it")
    if access is not None and access != entry.access:
        raise StateError(FORBIDDEN, f"only {entry.owner}, the owner, may change the access of {entry.key!r}")


def _expiry(now: dt.datetime, ttl: dt.timedelta | None, kept: dt.datetime | None) -> dt.datetime | None:
    return kept if ttl is None else now + ttl


# ---------------------------------------------------------------- events


def _topic(scope: str) -> str:
    return f"state/{scope}/change"


def _log_put(entry: Entry, row_id: str) -> int:
    aggregate = f"{entry.scope}/{entry.key}"
    return events.append(_topic(entry.scope), "put", AGGREGATE, aggregate, entry.to_json(), {ROW_ID: row_id})


def _deletion(entry: Entry, row_id: str) -> dict[str, Any]:
    payload = {"scope": entry.scope, "key": entry.key, "deleted": True, "version": entry.version}
    return {
        "topic": _topic(entry.scope),
        "event_type": "delete",
        "aggregate_type": AGGREGATE,
        "aggregate_id": f"{entry.scope}/{entry.key}",
        "payload": payload,
        "metadata": {ROW_ID: row_id},
    }


# ---------------------------------------------------------------- writing


ValueOf = Callable[[Entry | None], Any]  # the value to write, from the live entry (None: there is none)


def _create(
    scope: str,
    key: str,
    caller: str,
    value: Any,
    access: str | None,
    ttl: dt.timedelta | None,
    stale: models.SharedContext | None,
) -> tuple[Entry, int] | None:
    """Insert a new entry in place of none or of an expired row; None when another writer got
    there first (the caller reads again)."""
    if stale is not None and not Row.delete().where((Row.id == stale.id) & (Row.version == stale.version)).execute():
        return None
    now = clock()
    entry = Entry(scope, key, value, caller, access or "public", 1, now, now, _expiry(now, ttl, None))
    row_id = models.new_id()
    values = {
        "id": row_id,
        "context_type": scope,
        "key": key,
        "value": value,
        "owner_plugin": caller,
        "access_level": entry.access,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "expires_at": entry.expires_at,
    }
    if not Row.insert(values).on_conflict_ignore().as_rowcount().execute():
        return None
    return entry, _log_put(entry, row_id)


def _update(
    row: models.SharedContext, current: Entry, value: Any, access: str | None, ttl: dt.timedelta | None
) -> tuple[Entry, int] | None:
    """Write over the entry as read; None when it changed since (the caller reads again)."""
    now = clock()
    entry = replace(
        current,
        value=value,
        access=access or current.access,
        version=current.version + 1,
        updated_at=now,
        expires_at=_expiry(now, ttl, current.expires_at),
    )
    changes = {
        Row.value: value,
        Row.access_level: entry.access,
        Row.version: entry.version,
        Row.updated_at: now,
        Row.expires_at: entry.expires_at,
    }
    if not Row.update(changes).where((Row.id == row.id) & (Row.version == current.version)).execute():
        return None
    return entry, _log_put(entry, row.id)


def _write(
    scope: str,
    key: str,
    caller: str,
    value_of: ValueOf,
    version: int | None,
    access: str | None,
    ttl: dt.timedelta | None,
) -> tuple[Entry, int]:
    """The write every mutation but delete comes down to, inside a transaction."""
    for _ in range(WRITE_ATTEMPTS):
        row = _row(scope, key, for_update=True)
        current = _live(row)
        if current is not None:
            _authorise_write(current, caller, access)
        if version is not None and version != (0 if current is None else current.version):
            raise StateError(CONFLICT, _conflict(scope, key, version, current), current)
        value = as_stored(value_of(current))
        done = (
            _create(scope, key, caller, value, access, ttl, row)
            if current is None
            else _update(row, current, value, access, ttl)  # type: ignore[arg-type]
        )
        if done is not None:
            return done
    raise StateError(CONFLICT, f"{key!r} in {scope} kept changing while it was written; try again", None)


def _conflict(scope: str, key: str, version: int, current: Entry | None) -> str:
    now = "absent" if current is None else f"at version {current.version}"
    wanted = "absent" if version == 0 else f"at version {version}"
    return f"{key!r} in {scope} is {now}, not {wanted}"


def _transaction(operation: Callable[..., Any], *args: Any) -> Any:
    """One operation, one write transaction, written again when the database was busy."""

    def attempt() -> Any:
        with state.writing():
            return operation(*args)

    return state.with_retries(attempt)


# ---------------------------------------------------------------- the operations


def get(scope: str, key: str, caller: str) -> Entry:
    """The entry, or NOT_FOUND when there is none ``caller`` may see."""
    check_address(scope, key, caller)
    entry = _readable(_row(scope, key), caller)
    if entry is None:
        raise _absent(scope, key)
    return entry


def put(
    scope: str,
    key: str,
    value: Any,
    caller: str,
    *,
    version: int | None = None,
    access: str | None = None,
    ttl: dt.timedelta | None = None,
    fence: tuple[str, int] | None = None,
) -> tuple[Entry, int]:
    """Write a value; returns the entry and its event's number. ``version``: None writes whatever
    is there, 0 only creates, N only replaces version N (CONFLICT otherwise, with the entry as it
    is). ``access`` is set when the entry is created (public unless given) and changed only by its
    owner. ``ttl`` sets the entry to expire that long from now; without it an update keeps the
    expiry the entry had."""
    check_address(scope, key, caller)
    value = as_stored(value)
    check_access(access)
    check_ttl(ttl)
    if version is not None and version < 0:
        raise StateError(BAD_REQUEST, "a version is 0 (create only) or more")
    return _transaction(_put, scope, key, value, caller, version, access, ttl, fence)


def _put(
    scope: str,
    key: str,
    value: Any,
    caller: str,
    version: int | None,
    access: str | None,
    ttl: dt.timedelta | None,
    fence: tuple[str, int] | None,
) -> tuple[Entry, int]:
    check_fence(fence)
    return _write(scope, key, caller, lambda _current: value, version, access, ttl)


def delete(
    scope: str, key: str, caller: str, *, version: int | None = None, fence: tuple[str, int] | None = None
) -> int:
    """Remove an entry (only the given ``version`` when one is given); returns its event's number."""
    check_address(scope, key, caller)
    return _transaction(_delete, scope, key, caller, version, fence)


def _delete(scope: str, key: str, caller: str, version: int | None, fence: tuple[str, int] | None) -> int:
    check_fence(fence)
    for _ in range(WRITE_ATTEMPTS):
        row = _row(scope, key, for_update=True)
        current = _live(row)
        if row is None or current is None:
            raise _absent(scope, key)
        _authorise_write(current, caller, None)
        if version is not None and version != current.version:
            raise StateError(CONFLICT, _conflict(scope, key, version, current), current)
        if Row.delete().where((Row.id == row.id) & (Row.version == current.version)).execute():
            return events.append(**_deletion(current, row.id))
    raise StateError(CONFLICT, f"{key!r} in {scope} kept changing while it was deleted; try again", None)


def incr(scope: str, key: str, caller: str, by: int = 1, *, ttl: dt.timedelta | None = None) -> tuple[Entry, int]:
    """Add ``by`` to an integer entry, atomically (an absent one is created at ``by``)."""
    check_address(scope, key, caller)
    check_ttl(ttl)
    if not _is_integer(by):
        raise StateError(BAD_REQUEST, f"incr adds an integer, not {by!r}")
    return _transaction(_write, scope, key, caller, lambda current: _added(current, by), None, None, ttl)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _added(current: Entry | None, by: int) -> int:
    if current is None:
        return by
    if not _is_integer(current.value):
        raise StateError(BAD_REQUEST, f"{current.key!r} in {current.scope} holds no integer")
    return int(current.value) + by


def merge(scope: str, key: str, value_json: Any, caller: str, merge_fn: Callable[[Any, Any], Any]) -> tuple[Entry, int]:
    """Combine ``value_json`` into the entry with ``merge_fn(old value or None, value_json)`` and
    write the result if nobody wrote in between, reading again when someone did (a bounded
    number of times). The function is given, so that replicated value types stay out of the store."""
    check_address(scope, key, caller)
    for _ in range(MERGE_ATTEMPTS):
        try:
            return _transaction(_merge, scope, key, value_json, caller, merge_fn)
        except StateError as exc:
            if exc.code != CONFLICT:
                raise
    raise StateError(CONFLICT, f"{key!r} in {scope} kept changing while it was merged; try again", None)


def _merge(
    scope: str, key: str, value_json: Any, caller: str, merge_fn: Callable[[Any, Any], Any]
) -> tuple[Entry, int]:
    current = _live(_row(scope, key))
    if current is not None:
        _authorise_write(current, caller, None)
    merged = merge_fn(None if current is None else current.value, value_json)
    seen = 0 if current is None else current.version
    return _write(scope, key, caller, lambda _current: merged, seen, None, None)


def list_entries(scope: str, caller: str, prefix: str | None = None, limit: int = 1000) -> list[Entry]:
    """The live entries of a scope ``caller`` may see, by key, optionally only keys with ``prefix``."""
    check_scope(scope)
    check_caller(caller)
    now = clock()
    query = Row.select().where(
        (Row.context_type == scope)
        & (Row.expires_at.is_null() | (Row.expires_at > now))
        & ((Row.access_level != "private") | (Row.owner_plugin == caller))
    )
    if prefix:
        query = query.where(pw.fn.SUBSTR(Row.key, 1, len(prefix)) == prefix)
    return [_entry(row) for row in query.order_by(Row.key).limit(max(limit, 0))]


def purge_expired(limit: int | None = None) -> int:
    """Remove expired entries (at most ``limit``), each with its deletion event; returns how many."""
    removed = 0
    while limit is None or removed < limit:
        size = PURGE_CHUNK if limit is None else min(PURGE_CHUNK, limit - removed)
        went = _transaction(_purge_some, size)
        removed += went
        if went < size:
            break
    return removed


def _purge_some(size: int) -> int:
    now = clock()
    due = Row.select().where(Row.expires_at <= now).order_by(Row.expires_at, Row.context_type, Row.key)
    rows = list(due.limit(size))
    gone = [row for row in rows if Row.delete().where((Row.id == row.id) & (Row.version == row.version)).execute()]
    events.append_many([_deletion(_entry(row), row.id) for row in gone])
    return len(gone)


# ---------------------------------------------------------------- the log rebuilds the table


def rebuild_from_log() -> int:
    """Make ``shared_context`` again from the event log alone: every row goes, then each entry's
    last event in the log decides it (a put restores the entry, a delete leaves it out). Returns
    how many entries there are. Complete while the log holds every state event; a pruned log
    rebuilds only what changed since what it kept."""
    return _transaction(_rebuild)


def _rebuild() -> int:
    if isinstance(state.database.obj, pw.PostgresqlDatabase):
        # writers wait until the table is whole again; what they committed before is in the log
        state.database.obj.execute_sql('LOCK TABLE "shared_context" IN EXCLUSIVE MODE')
    last: dict[tuple[str, str], events.LoggedEvent] = {}
    for event in _state_events():
        last[(event.payload["scope"], event.payload["key"])] = event
    Row.delete().execute()
    rows = [_restored(event) for event in last.values() if not event.payload.get("deleted")]
    for start in range(0, len(rows), events.INSERT_CHUNK):
        Row.insert_many(rows[start : start + events.INSERT_CHUNK]).execute()
    return len(rows)


def _state_events() -> Iterator[events.LoggedEvent]:
    """The log's shared-context events, oldest first, a page at a time."""
    after = 0
    while page := events.read(since=after, topic="state/", limit=events.READ_PAGE):
        yield from (event for event in page if event.aggregate_type == AGGREGATE)
        after = page[-1].seq


def _restored(event: events.LoggedEvent) -> dict[str, Any]:
    entry = Entry.from_json(event.payload)
    return {
        "id": (event.metadata or {}).get(ROW_ID) or models.new_id(),
        "context_type": entry.scope,
        "key": entry.key,
        "value": entry.value,
        "owner_plugin": entry.owner,
        "access_level": entry.access,
        "version": entry.version,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
        "expires_at": entry.expires_at,
    }
