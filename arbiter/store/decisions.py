"""Recording routing decisions: one ``routing_decisions`` row per decision, however it was made.

The CLI writes one decision synchronously (``arbiter explain``, ``arbiter route TEXT``). Many
decisions (``arbiter route --input``) and the broker's, which must never wait on the database
in its poll loop, go to a recorder process (:mod:`arbiter.store.recorder`) as :data:`LogEntry`
rows, in batches. Every path builds the row with :func:`decision_row` from the decision's JSON,
so what ``arbiter decisions`` shows is the same whoever decided. How long rows are kept is
:mod:`arbiter.store.retention`.

A row keeps the first :data:`MAX_STORED_CHARS` characters of the request; a longer request is
stored cut, with its length and the SHA-256 of the whole text in ``classification.storedInput``
(:func:`stored_input`), so the log stays small and a stored row can still be matched to the
request it came from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import orjson
import peewee as pw

from arbiter.store import database as state
from arbiter.store import models

MAX_STORED_CHARS = 2000  # of a request's text in a row: what a person reading the log needs of it


@dataclass(frozen=True)
class StoredInput:
    """What a row says of a request it stored cut: the whole text's length and SHA-256 (of its
    UTF-8 bytes, lone surrogates passed through as JSON allows them)."""

    chars: int
    stored_chars: int
    sha256: str

    @classmethod
    def of(cls, text: str, stored_chars: int) -> StoredInput:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return cls(len(text), stored_chars, digest)

    def to_json(self) -> dict[str, Any]:
        return {"chars": self.chars, "storedChars": self.stored_chars, "sha256": self.sha256}

    def note(self, digits: int = 64) -> str:
        """What a reader appends to the stored text: ``… (N characters, sha256 …)``."""
        digest = self.sha256 if digits >= len(self.sha256) else self.sha256[:digits] + "…"
        return f"… ({self.chars:,} characters, sha256 {digest})"


def _stored_text(text: Any, classification: Any, limit: int) -> tuple[Any, Any]:
    """The request text as its row keeps it, and the classification with ``storedInput`` added
    when the text was cut (a copy: the decision's JSON is shared with the reply)."""
    if not isinstance(text, str) or len(text) <= limit:
        return text, classification
    cut = StoredInput.of(text, limit)
    return text[:limit], {**(classification or {}), "storedInput": cut.to_json()}


def decision_row(decision: Mapping[str, Any], origin: str, max_stored_chars: int = MAX_STORED_CHARS) -> dict[str, Any]:
    """Map a decision in the explain JSON shape onto the columns of ``routing_decisions``; a
    request text over ``max_stored_chars`` is stored cut (see :class:`StoredInput`)."""
    routing = decision.get("routingDecision") or {}
    user_input, classification = _stored_text(
        decision.get("userInput"), decision.get("classification"), max_stored_chars
    )
    return {
        "id": models.ordered_id(),
        "request_id": str(decision.get("requestId") or ""),
        "user_input": user_input,
        "classification": classification,
        "capability_scores": decision.get("capabilityScores"),
        "primary_plugin": routing.get("primaryPlugin"),
        "fallback_plugins": routing.get("fallbackPlugins"),
        "collaboration_plan": routing.get("collaborationPlan"),
        "execution_strategy": routing.get("executionStrategy"),
        "estimated_cost": routing.get("estimatedCost"),
        "estimated_duration": routing.get("estimatedDuration"),
        "agent_team": decision.get("agentTeam"),
        "rules_hash": decision.get("rulesHash"),
        "timings": decision.get("timings"),
        "outcome": decision.get("outcome"),
        "success": decision.get("success"),
        "actual_duration": decision.get("actualDuration"),
        "actual_cost": decision.get("actualCost"),
        "origin": origin,
        "created_at": models.now(),
        "trace_id": decision.get("traceId"),
    }


ROW_COLUMNS = tuple(decision_row({}, "").keys())
# What a repeat of a cached decision shares with the first row of that decision: the broker
# leaves these empty and points at that row (``outcome.decisionOf``); readers fill them in.
SHARED_COLUMNS = ("classification", "capability_scores", "collaboration_plan", "agent_team", "timings")


_FIELDS: tuple[pw.Field, ...] = tuple(models.RoutingDecision._meta.fields[c] for c in ROW_COLUMNS)
_ID, _REQUEST_ID, _OUTCOME, _SUCCESS, _CREATED_AT, _COST, _ACTUAL_COST, _ACTUAL_DURATION, _TRACE_ID = (
    ROW_COLUMNS.index(c)
    for c in (
        "id",
        "request_id",
        "outcome",
        "success",
        "created_at",
        "estimated_cost",
        "actual_cost",
        "actual_duration",
        "trace_id",
    )
)
REACHED = ("success", "error", "timeout")  # tries a worker worked on: each costs a task
_SHARED = tuple(ROW_COLUMNS.index(c) for c in SHARED_COLUMNS)


def row_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row as the database driver takes it: columns in ``ROW_COLUMNS`` order, each converted
    by its Peewee field."""
    return tuple(f.db_value(row.get(f.name)) for f in _FIELDS)


# One request's row as the broker's loop hands it to the recorder process: (template, row id,
# request id, outcome JSON, success, created at in epoch seconds, trace id). Cheap to make (no copy of the
# decision's columns, no date conversion) and to pickle (a plain tuple; the template is pickled
# once per batch however many rows share it); :func:`entry_values` turns it into database values
# in the recorder. The row id is chosen here, on the broker, so a batch sent again after a
# recorder died carries the same ids and its rows are not stored twice.
LogEntry = tuple["RowTemplate", str, str, str, "bool | None", float, "str | None"]


@dataclass(frozen=True)
class RowTemplate:
    """The row of a decision the broker reuses (its decision cache), converted to database values
    once. Each request that reuses the decision only brings its own id, request id, outcome,
    success and time (:meth:`entry`): the large JSON columns are encoded once."""

    request_id: str  # the request that made the decision: its row keeps the decision's JSON
    first: tuple[Any, ...]
    repeat: tuple[Any, ...]  # SHARED_COLUMNS left empty; readers fill them in from the first row

    @classmethod
    def of(cls, decision: Mapping[str, Any], origin: str) -> RowTemplate:
        return cls.of_values(str(decision.get("requestId") or ""), row_values(decision_row(decision, origin)))

    @classmethod
    def of_values(cls, request_id: str, first: Sequence[Any]) -> RowTemplate:
        repeat = list(first)
        for index in _SHARED:
            repeat[index] = None
        return cls(request_id, tuple(first), tuple(repeat))

    def wire(self) -> list[Any]:
        """The row's database values as JSON can carry them (a decider process sends them to the
        broker): the id and the time, which each request's entry sets anyway, are left out."""
        values = list(self.first)
        values[_ID] = values[_CREATED_AT] = None
        return values

    def entry(
        self, request_id: str, outcome: dict[str, Any] | None, success: bool | None, trace_id: str | None = None
    ) -> LogEntry:
        """This request's row, to be completed by :func:`entry_values`. A repeat refers to the
        first row (``outcome.decisionOf``, added to ``outcome`` in place) instead of storing the
        decision's JSON again. The outcome is encoded now, so later changes cannot reach the log.
        ``trace_id``: the request's own trace (each request of a cached decision has its own)."""
        if request_id != self.request_id:
            outcome = {} if outcome is None else outcome
            outcome["decisionOf"] = self.request_id
        outcome_json = _FIELDS[_OUTCOME].db_value(outcome)
        return (self, models.ordered_id(), request_id, outcome_json, success, time.time(), trace_id)


def entry_values(entry: LogEntry) -> tuple[Any, ...]:
    """A :class:`LogEntry` as the database driver takes it (columns in ``ROW_COLUMNS`` order)."""
    template, row_id, request_id, outcome, success, created, trace_id = entry
    values = list(template.first if request_id == template.request_id else template.repeat)
    if trace_id is not None:
        values[_TRACE_ID] = trace_id
    values[_ID] = row_id
    values[_REQUEST_ID] = request_id
    values[_OUTCOME] = outcome
    values[_SUCCESS] = _FIELDS[_SUCCESS].db_value(success)
    values[_ACTUAL_DURATION], values[_ACTUAL_COST] = actuals(outcome, values[_COST])
    moment = dt.datetime.fromtimestamp(created, dt.timezone.utc).replace(tzinfo=None)
    values[_CREATED_AT] = _FIELDS[_CREATED_AT].db_value(moment)
    return tuple(values)


def actuals(outcome_json: str | None, estimated_cost: float | None) -> tuple[int | None, float | None]:
    """What the request took, next to the estimate: its time from admission to answer, and its
    cost — the estimate is the price of one try per phase, so each phase is charged for the tries
    a worker actually worked on (a retry or a fallback costs a task more; an unanswered request
    none)."""
    outcome = orjson.loads(outcome_json) if outcome_json else {}
    duration = outcome.get("durationMs")
    phases = outcome.get("phases")
    if phases:
        tries, planned = sum(p.get("tries") or 0 for p in phases), len(phases)
    else:
        tries, planned = sum(s.get("outcome") in REACHED for s in outcome.get("steps") or ()), 1
    cost = None if estimated_cost is None else round(estimated_cost * tries / planned, 4)
    return (None if duration is None else round(duration)), cost


ROWS_PER_STATEMENT = 100  # 2,000 parameters; SQLite allows 32,766 and PostgreSQL 65,535


def insert_values(rows: Sequence[tuple[Any, ...]], skip_existing: bool = False) -> int:
    """Store rows given as database values (columns in ``ROW_COLUMNS`` order) in one transaction;
    returns how many were inserted. ``skip_existing``: a row whose id is already stored is left
    out instead of failing the batch (the recorder re-sends what a dead recorder may have written)."""
    if not rows:
        return 0
    with state.writing():
        return store_values(rows, skip_existing)


def store_values(rows: Sequence[tuple[Any, ...]], skip_existing: bool = False) -> int:
    """:func:`insert_values` inside the caller's transaction (the recorder writes a whole batch,
    rows, letters and circuit states, in one).

    Many rows per ``INSERT ... VALUES (...), (...)`` statement: the driver binds them all in one
    call and the database runs one statement, where ``executemany`` makes a call per row (and
    PostgreSQL's driver also sends them one at a time)."""
    db = state.database.obj
    cursor = db.cursor()
    inserted = 0
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        cursor.execute(_insert_sql(db.param, len(chunk), skip_existing), [value for row in chunk for value in row])
        inserted += cursor.rowcount
    return inserted


@lru_cache(maxsize=4 * ROWS_PER_STATEMENT)  # every chunk size, placeholder style and conflict rule
def _insert_sql(param: str, rows: int, skip_existing: bool = False) -> str:
    names = ", ".join(f'"{f.column_name}"' for f in _FIELDS)  # standard SQL quoting: SQLite and PostgreSQL
    row = "(" + ", ".join([param] * len(_FIELDS)) + ")"
    sql = f'INSERT INTO "routing_decisions" ({names}) VALUES ' + ", ".join([row] * rows)
    return sql + " ON CONFLICT DO NOTHING" if skip_existing else sql


def write_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    """Store rows given as column → value mappings (see :func:`decision_row`)."""
    insert_values([row_values(row) for row in rows])


def record_decision(decision: Mapping[str, Any], origin: str = "cli") -> str:
    """Store one decision now (waiting out a busy database); returns the row id."""
    row = decision_row(decision, origin)
    state.with_retries(write_rows, [row])
    return row["id"]


def _as_dict(row: models.RoutingDecision) -> dict[str, Any]:
    return {
        "id": row.id,
        "requestId": row.request_id,
        "createdAt": row.created_at.isoformat(timespec="milliseconds") + "Z",
        "origin": row.origin,
        "userInput": row.user_input,
        "classification": row.classification,
        "capabilityScores": row.capability_scores or [],
        "primaryPlugin": row.primary_plugin,
        "fallbackPlugins": row.fallback_plugins or [],
        "collaborationPlan": row.collaboration_plan,
        "agentTeam": row.agent_team,
        "executionStrategy": row.execution_strategy,
        "estimatedCost": row.estimated_cost,
        "estimatedDuration": row.estimated_duration,
        "rulesHash": row.rules_hash,
        "timings": row.timings,
        "outcome": row.outcome,
        "success": row.success,
        "traceId": row.trace_id,
    }


_SHARED_KEYS = tuple(  # SHARED_COLUMNS as _as_dict names them: capability_scores -> capabilityScores
    head + "".join(word.title() for word in rest) for head, *rest in (c.split("_") for c in SHARED_COLUMNS)
)


def _complete(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill in what repeats of cached decisions left to the rows that first made them: one
    query for all of them, however many repeats of one decision a listing holds."""
    wanted = {
        first: None
        for d in decisions
        if d["classification"] is None and (first := (d.get("outcome") or {}).get("decisionOf"))
    }
    if not wanted:
        return decisions
    firsts = models.RoutingDecision.select().where(models.RoutingDecision.request_id.in_(list(wanted)))
    origins: dict[str, dict[str, Any]] = {}
    for row in firsts.order_by(models.RoutingDecision.created_at.desc()):
        origins[row.request_id] = _as_dict(row)  # the oldest row of a request id wins
    for decision in decisions:
        origin = origins.get((decision.get("outcome") or {}).get("decisionOf"))
        if origin is not None and decision["classification"] is None:
            for key in _SHARED_KEYS:
                decision[key] = origin[key]
    return decisions


def stored_input(decision: Mapping[str, Any]) -> StoredInput | None:
    """How a recorded decision's request was cut when stored, or None if it is stored whole."""
    found = (decision.get("classification") or {}).get("storedInput")
    if not isinstance(found, Mapping):
        return None
    try:
        return StoredInput(int(found["chars"]), int(found["storedChars"]), str(found["sha256"]))
    except (KeyError, TypeError, ValueError):
        return None


def shown_input(decision: Mapping[str, Any], digits: int = 64) -> str:
    """A recorded request's text for people: a cut one ends in ``… (N characters, sha256 …)``."""
    text = str(decision.get("userInput") or "")
    cut = stored_input(decision)
    return text if cut is None else text + cut.note(digits)


def recent_decisions(limit: int = 20) -> list[dict[str, Any]]:
    """The newest decisions first, as plain dicts."""
    query = models.RoutingDecision.select().order_by(models.RoutingDecision.created_at.desc()).limit(limit)
    return _complete([_as_dict(row) for row in query])


def find_decision(request_id: str) -> dict[str, Any] | None:
    """The recorded decision of one request (the newest, if it was decided more than once)."""
    query = (
        models.RoutingDecision.select()
        .where(models.RoutingDecision.request_id == request_id)
        .order_by(models.RoutingDecision.created_at.desc())
        .limit(1)
    )
    row = query.first()
    return _complete([_as_dict(row)])[0] if row else None


def save_circuit(plugin: str, version: str, circuit: str, reason: str) -> None:
    """Keep a plugin's circuit state in the ``plugins`` table, so ``arbiter explain`` run from
    the command line sees what the broker last saw. Reads, then writes: call it inside
    :func:`state.writing` (the recorder does, with the rest of its batch)."""
    info = {"circuit": circuit, "reason": reason, "at": models.now().isoformat(timespec="milliseconds") + "Z"}
    status = "active" if circuit == "closed" else "error"
    row = models.PluginRecord.get_or_none(models.PluginRecord.name == plugin)
    if row is None:
        models.PluginRecord.create(id=models.new_id(), name=plugin, version=version, status=status, metadata=info)
        return
    metadata = dict(row.metadata or {}, **info)
    models.PluginRecord.update(status=status, metadata=metadata, updated_at=models.now()).where(
        models.PluginRecord.name == plugin
    ).execute()


def saved_circuits() -> dict[str, dict[str, Any]]:
    """The last circuit state the broker recorded for each plugin whose circuit is not closed."""
    rows = models.PluginRecord.select().where(models.PluginRecord.status == "error")
    return {row.name: dict(row.metadata or {}) for row in rows if (row.metadata or {}).get("circuit")}
