"""The event log: every change to shared state, kept in order, so that what happened can be read
back from any point (``read(since=seq)``) and the state rebuilt from it.

Events are numbered (``seq``) in the order they were committed: a reader that saw up to ``n``
and reads again after ``n`` misses nothing. On SQLite, one writer at a time makes it so. On
PostgreSQL, sequence numbers are drawn when rows are inserted, not when their transactions
commit, so a reader could see 11 before 10 had committed and skip 10 for good; appending takes a
transaction-level advisory lock first, so events of concurrent transactions are numbered and
committed one transaction after the other. The lock is held until commit: append last in a
transaction, after its other writes, so no transaction waits for a row while holding it.

Topics are ``/``-separated like the event bus's, and :func:`read` takes the bus's wildcard
patterns (:mod:`arbiter.wire.topics`). :func:`prune` removes the oldest events by age and count,
as retention does for the decision log; a pruned log no longer rebuilds state that was last
changed before what it kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping

import peewee as pw

from arbiter.store import database as state
from arbiter.store import models
from arbiter.wire.topics import ANY_SEGMENTS, topic_matches

DELETE_CHUNK = 1000  # events per transaction when the log is cut: writers wait one chunk at most

Event = models.Event
clock: Callable[[], dt.datetime] = models.now  # tests move time by replacing it
READ_PAGE = 500  # rows fetched at a time while a wildcard pattern is matched in Python
INSERT_CHUNK = 500  # rows per INSERT: SQLite bounds the parameters of one statement
ORDER_LOCK = "SELECT pg_advisory_xact_lock(hashtext('arbiter.events/' || current_schema()))"


@dataclass(frozen=True)
class LoggedEvent:
    """One event as the log holds it."""

    seq: int
    topic: str
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: Any
    metadata: Any
    at: dt.datetime

    @classmethod
    def of(cls, row: models.Event) -> LoggedEvent:
        return cls(
            int(row.seq),
            row.topic,
            row.event_type,
            row.aggregate_type,
            row.aggregate_id,
            row.payload,
            row.metadata,
            row.timestamp,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "topic": self.topic,
            "type": self.type,
            "aggregate": {"type": self.aggregate_type, "id": self.aggregate_id},
            "payload": self.payload,
            "metadata": self.metadata,
            "at": iso(self.at),
        }


def iso(moment: dt.datetime | None) -> str | None:
    """A time to the microsecond, as stored: events carry state that must come back unchanged."""
    return None if moment is None else moment.isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text.removesuffix("Z"))


# ---------------------------------------------------------------- appending


@contextlib.contextmanager
def _in_commit_order() -> Iterator[None]:
    """The caller's transaction (or one of its own), holding the order lock on PostgreSQL."""
    db = state.database.obj
    with contextlib.ExitStack() as stack:
        if not db.in_transaction():
            stack.enter_context(state.writing())
        if isinstance(db, pw.PostgresqlDatabase):
            db.execute_sql(ORDER_LOCK)
        yield


def _values(
    topic: str,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    payload: Any,
    metadata: Any = None,
    timestamp: dt.datetime | float | None = None,
) -> dict[str, Any]:
    if not topic or "*" in topic:
        raise ValueError(f"an event's topic must be a topic, not {topic!r}")
    if isinstance(timestamp, (int, float)):
        timestamp = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).replace(tzinfo=None)
    return {
        "topic": topic,
        "event_type": event_type,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "payload": payload,
        "metadata": metadata,
        "timestamp": timestamp or clock(),
    }


def append(
    topic: str,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    payload: Any,
    metadata: Any = None,
) -> int:
    """Log one event and return its number. Call it inside the transaction that makes the change,
    as its last write, so the change and its event commit together (or not at all)."""
    values = _values(topic, event_type, aggregate_type, aggregate_id, payload, metadata)
    with _in_commit_order():
        return int(Event.insert(values).execute())


def append_many(rows: Iterable[Mapping[str, Any]]) -> None:
    """Log several events in the order given, each a mapping of :func:`append`'s arguments by
    name, and optionally ``timestamp`` (a datetime in UTC or epoch seconds: when it happened, for
    events handed over after the fact). Like :func:`append`, inside the caller's transaction."""
    values = [_row_values(_values(**row)) for row in rows]
    if not values:
        return
    db = state.database.obj
    with _in_commit_order():
        cursor = db.cursor()
        for start in range(0, len(values), INSERT_CHUNK):
            chunk = values[start : start + INSERT_CHUNK]
            cursor.execute(_insert_sql(db.param, len(chunk)), [value for row in chunk for value in row])


_COLUMNS = ("topic", "event_type", "aggregate_type", "aggregate_id", "payload", "metadata", "timestamp")
_FIELDS = tuple(Event._meta.fields[name] for name in _COLUMNS)


def _row_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row as the driver binds it: the recorder logs an event per routed request, and building
    them through the query builder cost several times what the database did."""
    return tuple(field.db_value(row[name]) for name, field in zip(_COLUMNS, _FIELDS))


@lru_cache(maxsize=2 * INSERT_CHUNK)
def _insert_sql(param: str, rows: int) -> str:
    names = ", ".join(f'"{field.column_name}"' for field in _FIELDS)
    row = "(" + ", ".join([param] * len(_FIELDS)) + ")"
    return f'INSERT INTO "events" ({names}) VALUES ' + ", ".join([row] * rows)


# ---------------------------------------------------------------- reading


def _narrowing(topic: str | None) -> tuple[str, Callable[[str], bool] | None]:
    """The literal prefix every matching topic starts with (for SQL to select on), and the test
    left for Python (None: the prefix says it all). A ``**`` segment also matches no segment at
    all (``a/**`` matches ``a``), so the ``/`` before it is not part of the prefix."""
    if topic is None:
        return "", None
    if "*" not in topic:
        return topic, None
    head = topic[: topic.index("*")]
    if topic[len(head) :].startswith(ANY_SEGMENTS) and head.endswith("/"):
        head = head[:-1]
    return head, lambda candidate: topic_matches(topic, candidate)


def _page(after: int, prefix: str, size: int) -> list[models.Event]:
    query = Event.select().where(Event.seq > after)
    if prefix:
        # substr, not LIKE: exact and case-sensitive on both databases, with nothing to escape
        query = query.where(pw.fn.SUBSTR(Event.topic, 1, len(prefix)) == prefix)
    return list(query.order_by(Event.seq).limit(size))


def read(since: int = 0, topic: str | None = None, limit: int = 1000) -> list[LoggedEvent]:
    """The events numbered after ``since``, oldest first, at most ``limit``. ``topic`` is a plain
    prefix, or a pattern with ``*`` (within one segment) and ``**`` (any number of segments)."""
    prefix, matches = _narrowing(topic)
    if matches is None:
        return [LoggedEvent.of(row) for row in _page(since, prefix, max(limit, 0))]
    found: list[LoggedEvent] = []
    after = since
    while len(found) < limit:
        rows = _page(after, prefix, READ_PAGE)
        found += [LoggedEvent.of(row) for row in rows if matches(row.topic)]
        if len(rows) < READ_PAGE:
            break
        after = int(rows[-1].seq)
    return found[:limit]


def latest_seq() -> int:
    """The number of the newest event (0 when the log is empty): where a new reader starts."""
    return int(Event.select(pw.fn.MAX(Event.seq)).scalar() or 0)


# ---------------------------------------------------------------- retention


def prune(
    max_age: dt.timedelta | None = None,
    max_rows: int | None = None,
    *,
    batch: int = DELETE_CHUNK,
    limit: int | None = None,
) -> int:
    """Delete the events older than ``max_age`` and all but the newest ``max_rows``, oldest first,
    ``batch`` per transaction and at most ``limit`` (None: all that are due); returns how many
    went. The log is cut as a prefix: an event older than ``max_age`` that follows a newer one
    (two brokers' clocks differ) stays until the events before it go, so a reader following the
    log by number never finds a gap in what is left."""
    through = _boundary(max_age, max_rows)
    if through is None:
        return 0
    deleted = 0
    while limit is None or deleted < limit:
        size = batch if limit is None else min(batch, limit - deleted)
        went = state.with_retries(_delete_oldest, through, size)
        deleted += went
        if went < size:
            break
    return deleted


def _boundary(max_age: dt.timedelta | None, max_rows: int | None) -> int | None:
    """The newest event either limit condemns; both take from the old end, so together they
    condemn every event up to it."""
    found: list[int] = []
    if max_age is not None:
        young = Event.select(Event.seq).where(Event.timestamp >= clock() - max_age).order_by(Event.seq).first()
        found.append(latest_seq() if young is None else int(young.seq) - 1)
    if max_rows is not None:
        beyond = Event.select(Event.seq).order_by(Event.seq.desc()).offset(max_rows).first()
        found.append(0 if beyond is None else int(beyond.seq))
    through = max(found, default=0)
    return through if through > 0 else None


def _delete_oldest(through: int, size: int) -> int:
    oldest = Event.select(Event.seq).where(Event.seq <= through).order_by(Event.seq).limit(size)
    with state.writing():
        return int(Event.delete().where(Event.seq.in_(oldest)).execute())
