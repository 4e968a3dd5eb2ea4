"""Chain runs and their steps in the seed's ``tasks`` table: written as they change, read back to
show them and to resume a run after the broker restarts.

A run is one task row (``parent_task_id`` null, ``title`` the chain's name, ``description`` what
ran: ``chain`` or ``plan``, a routed request's collaboration plan); each step is one more, its
``parent_task_id`` the run's id, ``title`` the step's name, ``priority`` its place in the chain,
``assigned_plugin``/``assigned_agent`` the plugin and command; a step's compensation is a row of
its own (``description`` ``compensation``). Everything else — parameters, arguments, tries, time
— is in ``metadata``. The broker hands these rows to its recorder process with the decision log
(:mod:`.recorder`), in the order the run changed; the command line reads them here. A run keeps
the ``messageId`` of the request that started it (``message_id``, unique where set, written with
its first row and never changed), so that the same start sent again finds it (:func:`started_by`).

On a PostgreSQL store several brokers share, a run is leased (``lease_owner``, ``lease_expires``):
the broker that started it writes its name with the run's first row, renews all its leases at
once (:func:`renew`), and once one expired another broker takes the run over (:func:`claim`:
``SELECT ... FOR UPDATE SKIP LOCKED``, so two brokers never take the same run). Lease times are
the database's clock, so brokers' clocks may differ.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping

import peewee as pw

from arbiter.store import database as state
from arbiter.store import models

Task = models.Task
UNFINISHED = ("pending", "running", "compensating")  # a run in one of these was cut short by a stop
FINISHED = ("completed", "failed", "cancelled", "timed-out", "compensated", "compensation-failed")


class RunNotFound(LookupError):
    """No run has this id (or id prefix)."""


def _moment(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


# -- writing (the recorder process) ---------------------------------------------------------------

COLUMNS = (
    "parent_task_id",
    "title",
    "description",
    "status",
    "priority",
    "assigned_plugin",
    "assigned_agent",
    "result",
    "error",
    "metadata",
    "updated_at",
    "completed_at",
)


def task_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run's or a step's row as the broker describes it (plain values, times in epoch seconds),
    as columns of ``tasks``; a run's ``owner`` starts its lease (kept as it is by later writes)."""
    owner = row.get("owner")
    return {
        "message_id": row.get("messageId"),
        "lease_owner": owner,
        "lease_expires": _db_now_plus(row.get("lease_s", 0.0)) if owner else None,
        "id": row["id"],
        "parent_task_id": row.get("run"),
        "title": row["name"],
        "description": row["what"],
        "status": row["status"],
        "priority": row.get("order", 0),
        "assigned_plugin": row.get("plugin"),
        "assigned_agent": row.get("command"),
        "result": row.get("result"),
        "error": row.get("error"),
        "metadata": row.get("meta") or {},
        "created_at": _moment(row.get("created")),
        "updated_at": _moment(row.get("updated")),
        "completed_at": _moment(row.get("completed")),
    }


def save(rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert or update rows, inside the caller's transaction; a row written again (the same
    change re-sent after a recorder restart) changes nothing more."""
    # The last change of each row: PostgreSQL refuses a statement that upserts one row twice.
    values = list({row["id"]: task_values(row) for row in rows}.values())
    if not values:
        return
    _keep_message_ids_unique(values)
    update = {getattr(Task, name): getattr(pw.EXCLUDED, name) for name in COLUMNS}
    Task.insert_many(values).on_conflict(conflict_target=[Task.id], update=update).execute()


def _keep_message_ids_unique(values: list[dict[str, Any]]) -> None:
    """A run whose messageId another run holds already (two brokers started it at once, before
    either was stored) is kept without it: the batch must not fail on the unique index."""
    wanted = {v["message_id"]: v["id"] for v in values if v.get("message_id")}
    if not wanted:
        return
    held = Task.select(Task.id, Task.message_id).where(Task.message_id.in_(list(wanted)))
    taken = {task.message_id for task in held if task.id != wanted[task.message_id]}
    for value in values:
        if value.get("message_id") in taken:
            value["message_id"] = None


# -- reading (the command line, the broker at start) --------------------------------------------


def _row(task: models.Task) -> dict[str, Any]:
    meta = dict(task.metadata or {})
    return {
        "id": task.id,
        "name": task.title,
        "what": task.description,
        "status": task.status,
        "order": task.priority,
        "plugin": task.assigned_plugin,
        "command": task.assigned_agent,
        "result": task.result,
        "error": task.error,
        "meta": meta,
        "createdAt": _iso(task.created_at),
        "updatedAt": _iso(task.updated_at),
        "completedAt": _iso(task.completed_at),
    }


def find(run_id: str) -> models.Task:
    """The run with this id, or with the one id starting with this prefix (like git)."""
    prefix = run_id.strip()
    runs = Task.select().where(Task.parent_task_id.is_null())
    exact = runs.where(Task.id == prefix).first()
    if exact is not None:
        return exact
    matches = list(runs.where(Task.id.startswith(prefix)).limit(2)) if prefix else []
    if len(matches) != 1:
        problem = "no chain run" if not matches else "several chain runs"
        raise RunNotFound(f"{problem} with id '{run_id}'; see `arbiter chain runs`")
    return matches[0]


def get(run_id: str) -> dict[str, Any]:
    """One run with its steps in order (compensations after the step they undo)."""
    run = find(run_id)
    steps = Task.select().where(Task.parent_task_id == run.id).order_by(Task.priority, Task.created_at)
    data = _row(run)
    data["steps"] = [_row(step) for step in steps]
    return data


def started_by(message_id: str) -> dict[str, Any] | None:
    """The run the request ``message_id`` started, with its steps; None when it started none."""
    run = Task.get_or_none(Task.parent_task_id.is_null() & (Task.message_id == message_id))
    return None if run is None else get(run.id)


def recent(last: int = 20, chain: str | None = None) -> list[dict[str, Any]]:
    """The newest runs first, without their steps."""
    query = Task.select().where(Task.parent_task_id.is_null()).order_by(Task.created_at.desc()).limit(last)
    if chain:
        query = query.where(Task.title == chain)
    return [_row(run) for run in query]


def unfinished() -> list[dict[str, Any]]:
    """Runs a stop cut short, with their steps: the broker resumes them when it starts."""
    runs = Task.select(Task.id).where(Task.parent_task_id.is_null() & Task.status.in_(UNFINISHED))
    return [get(run.id) for run in runs]


# -- leases (PostgreSQL, several brokers) ------------------------------------------------------


def _db_now_plus(seconds: float) -> Any:
    """The database's UTC time ``seconds`` from now (the column holds UTC without a zone)."""
    if isinstance(state.database.obj, pw.PostgresqlDatabase):
        return pw.SQL("((now() AT TIME ZONE 'UTC') + %s * interval '1 second')", [float(seconds)])
    return models.now() + dt.timedelta(seconds=seconds)


def renew(owner: str, lease_s: float) -> int:
    """Extend every lease ``owner`` holds on a run not ended; returns how many."""
    with state.writing():
        query = Task.update(lease_expires=_db_now_plus(lease_s)).where(
            Task.parent_task_id.is_null() & (Task.lease_owner == owner) & Task.status.in_(UNFINISHED)
        )
        return query.execute()


def claim(owner: str, lease_s: float, at_start: bool = False, limit: int = 100) -> list[str]:
    """Take the unfinished chain runs whose lease expired (and, ``at_start``, those still held
    under this owner's name: a broker that restarts takes its own back at once), plus runs never
    leased whose last change is older than a lease. Rows another broker is claiming are skipped,
    not waited for. Returns the ids taken, their leases now ``owner``'s."""
    now = _db_now_plus(0)
    expired = Task.lease_expires < now
    unleased = Task.lease_owner.is_null() & (Task.updated_at < _db_now_plus(-lease_s))
    takeable = (expired | unleased | (Task.lease_owner == owner)) if at_start else (expired | unleased)
    with state.writing():
        query = (
            Task.select(Task.id)
            .where(
                Task.parent_task_id.is_null() & (Task.description == "chain") & Task.status.in_(UNFINISHED) & takeable
            )
            .order_by(Task.created_at)
            .limit(limit)
        )
        if isinstance(state.database.obj, pw.PostgresqlDatabase):
            query = query.for_update(skip_locked=True)
        ids = [task.id for task in query]
        if ids:
            Task.update(lease_owner=owner, lease_expires=_db_now_plus(lease_s)).where(Task.id.in_(ids)).execute()
        return ids


def write_now(rows: Iterable[Mapping[str, Any]]) -> None:
    """Store rows at once, for a process without a recorder (tests, tools)."""
    rows = list(rows)
    state.with_retries(_write, rows)


def _write(rows: list[Mapping[str, Any]]) -> None:
    with state.writing():
        save(rows)
