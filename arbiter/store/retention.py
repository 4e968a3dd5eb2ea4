"""How long the decision log keeps its rows: ``retention`` in configs/state.yaml.

The broker records a row per routed request, so without a limit the log grows as long as the
broker serves. Rows go oldest first, by two limits that may be combined: an age (``max_age``)
and a count (``max_rows``, the newest kept). The broker's recorder process applies them on its
own, a bounded number of rows per round so the write lock is never held for long;
``arbiter decisions prune`` applies them (or others) at once.

A row that repeats a cached decision points at the row that made it (``outcome.decisionOf``);
when that first row is gone, the repeat is still listed, without the shared columns.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping

import peewee as pw

from arbiter.store import database as state
from arbiter.store import dead_letters as letters
from arbiter.store import events, models

log = logging.getLogger("arbiter.store.retention")

DELETE_CHUNK = 1000  # rows per transaction: other writers wait at most one chunk for the lock
FIRST_ROUND_S = 1.0  # the recorder's first round, after it starts
BUSY_ROUND_S = 1.0  # the next round, while a round found more due than it may delete

Decision = models.RoutingDecision
Boundary = tuple[dt.datetime, str]  # (created_at, id) of the newest row to delete


@dataclass(frozen=True)
class Retention:
    """The limits (None: no limit of that kind) and how the recorder applies them: a round every
    ``every_s`` seconds, at most ``per_round`` rows a round (the next round comes sooner while
    more are due)."""

    max_age_s: float | None = None
    max_rows: int | None = None
    every_s: float = 60.0
    per_round: int = 10_000
    events_max_age_s: float | None = None  # the event log's own limits (``event_retention``)
    events_max_rows: int | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any], parse_ms: Callable[[str], int]) -> Retention:
        """From configs/state.yaml ``retention`` (``max_age`` a duration text, read with the
        product's duration reader, handed in: the store does not import the rule language)."""
        max_age = config.get("max_age")
        return cls(None if max_age is None else parse_ms(max_age) / 1000, config.get("max_rows"))

    def with_events(self, config: Mapping[str, Any], parse_ms: Callable[[str], int]) -> Retention:
        """These limits, and the event log's from configs/state.yaml ``event_retention``."""
        other = Retention.of(config, parse_ms)
        return replace(self, events_max_age_s=other.max_age_s, events_max_rows=other.max_rows)

    @property
    def active(self) -> bool:
        return self.max_age_s is not None or self.max_rows is not None

    @property
    def max_age(self) -> dt.timedelta | None:
        return None if self.max_age_s is None else dt.timedelta(seconds=self.max_age_s)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Retention:
        return cls(**data)


def prune(
    older_than: dt.timedelta | None = None,
    keep: int | None = None,
    *,
    limit: int | None = None,
    dry_run: bool = False,
) -> int:
    """Delete the decisions older than ``older_than`` and all but the newest ``keep``, oldest
    first and at most ``limit`` (None: all that are due); returns how many went, or with
    ``dry_run`` how many are due. Each chunk is its own transaction, written with retries."""
    boundary = _boundary(older_than, keep)
    if boundary is None:
        return 0
    if dry_run:
        due = Decision.select().where(_through(boundary)).count()
        return due if limit is None else min(due, limit)
    deleted = 0
    while limit is None or deleted < limit:
        size = DELETE_CHUNK if limit is None else min(DELETE_CHUNK, limit - deleted)
        went = state.with_retries(_delete_oldest, boundary, size)
        deleted += went
        if went < size:
            break
    return deleted


def _boundary(older_than: dt.timedelta | None, keep: int | None) -> Boundary | None:
    """The newest row either limit condemns. Both limits take rows from the old end, so what they
    condemn together is every row up to this one, however rows arrive or go meanwhile."""
    newest_first = Decision.select(Decision.created_at, Decision.id).where(Decision.created_at.is_null(False))
    newest_first = newest_first.order_by(Decision.created_at.desc(), Decision.id.desc())
    found: list[Boundary] = []
    if older_than is not None:
        aged = newest_first.where(Decision.created_at < models.now() - older_than)
        found += [(r.created_at, r.id) for r in aged.limit(1)]
    if keep is not None:
        found += [(r.created_at, r.id) for r in newest_first.offset(keep).limit(1)]
    return max(found) if found else None


def _through(boundary: Boundary) -> pw.Expression:
    at, row_id = boundary
    return (Decision.created_at < at) | ((Decision.created_at == at) & (Decision.id <= row_id))


def _delete_oldest(boundary: Boundary, size: int) -> int:
    oldest = Decision.select(Decision.id).where(_through(boundary))
    oldest = oldest.order_by(Decision.created_at, Decision.id).limit(size)
    with state.writing():
        return int(Decision.delete().where(Decision.id.in_(oldest)).execute())


class Upkeep:
    """The rounds of the recorder process, between batches: each deletes at most ``per_round``
    decisions past retention, and as many dead-letter repeat ids nobody needs any more, so a
    batch never waits long behind one."""

    def __init__(self, retention: Retention | None) -> None:
        self.retention = retention or Retention()
        self.due = time.monotonic() + FIRST_ROUND_S

    def wait_s(self) -> float:
        """Seconds until the next round."""
        return max(0.0, self.due - time.monotonic())

    def run_if_due(self) -> None:
        if time.monotonic() < self.due:
            return
        try:
            more = self._round()
        except Exception as exc:  # the database may be busy or gone; the next round tries again
            log.warning("recorder: retention round failed: %s: %s", type(exc).__name__, exc)
            more = False
        self.due = time.monotonic() + (BUSY_ROUND_S if more else self.retention.every_s)

    def _round(self) -> bool:
        """One round; True when it stopped at its bound with more due."""
        limit, pruned = self.retention.per_round, 0
        if self.retention.active:
            pruned = prune(self.retention.max_age, self.retention.max_rows, limit=limit)
            if pruned:
                log.info("recorder: pruned %d routing decision(s) past retention", pruned)
        cut = self._prune_events(limit)
        forgotten = letters.forget_repeats(limit)
        return pruned >= limit or forgotten >= limit or cut >= limit

    def _prune_events(self, limit: int) -> int:
        keeping = self.retention
        if keeping.events_max_age_s is None and keeping.events_max_rows is None:
            return 0
        age = None if keeping.events_max_age_s is None else dt.timedelta(seconds=keeping.events_max_age_s)
        cut = events.prune(age, keeping.events_max_rows, limit=limit)
        if cut:
            log.info("recorder: pruned %d event(s) past the event log's retention", cut)
        return cut
