"""The agent registry that learns: what each plugin's commands actually did when the broker sent
them work, kept in the seed's ``agents`` table.

Every try of a routed request, a plan's phase or a chain's step that reached a worker is one
outcome: success or failure, and how long it took. The recorder process folds them in with the
decision rows they came with (:mod:`.recorder_process`), one row per plugin and command (``name``
the command) and one per plugin as a whole (``name`` ``*``), each with its lifetime counts and a
window of the latest :data:`WINDOW` outcomes, from which the success rate and the p50/p95
durations are read. A window, not the lifetime, because a plugin that was fixed (or broke) an
hour ago should be judged by what it does now.

What is not the plugin's doing is not counted: a try skipped by an open circuit, a request
refused as the caller's mistake (``rejected``), a fallback skipped for a missing parameter, a
cached answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import orjson
import peewee as pw

from arbiter.store import events, models

WINDOW = 200  # outcomes per row that the rate and the percentiles are read from
PLUGIN_ROW = "*"  # the row of a plugin as a whole
SUCCESS = ("success",)
FAILURE = ("error", "timeout", "unavailable")  # the plugin did not do it: counted against it

Agent = models.AgentRecord


@dataclass(frozen=True)
class Outcome:
    plugin: str
    command: str
    ok: bool
    ms: float


def outcomes_of(outcome_json: str | bytes | None) -> list[Outcome]:
    """The tries a decision row's outcome lists (``steps``) that say something of the plugin."""
    if not outcome_json:
        return []
    outcome = orjson.loads(outcome_json) or {}
    found = []
    for step in outcome.get("steps") or ():
        kind = step.get("outcome")
        if kind in SUCCESS or kind in FAILURE:
            found.append(Outcome(str(step.get("plugin")), str(step.get("command")), kind in SUCCESS, step.get("ms", 0)))
    return found


def step_outcome(row: Mapping[str, Any]) -> Outcome | None:
    """A chain's or a plan's step that ended (its task row, :mod:`.runs`): what its plugin did."""
    if row.get("what") != "step" or row.get("status") not in ("completed", "failed") or not row.get("plugin"):
        return None
    ms = (row.get("meta") or {}).get("ms", 0)
    return Outcome(str(row["plugin"]), str(row.get("command")), row["status"] == "completed", ms)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)


def figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What a row's window says: success rate, p50 and p95 of the successful tries' durations."""
    recent = metrics.get("recent") or []
    times = [ms for ok, ms in recent if ok]
    return {
        "calls": metrics.get("calls", 0),
        "successes": metrics.get("successes", 0),
        "window": len(recent),
        "successRate": round(sum(ok for ok, _ in recent) / len(recent), 4) if recent else None,
        "p50Ms": _percentile(times, 0.50),
        "p95Ms": _percentile(times, 0.95),
    }


def learn(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """Fold ``outcomes`` into the registry, inside the caller's transaction; returns the plugins'
    success rates as they now stand (for the broker's routing)."""
    grouped: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in outcomes:
        grouped.setdefault((outcome.plugin, outcome.command), []).append(outcome)
        grouped.setdefault((outcome.plugin, PLUGIN_ROW), []).append(outcome)
    rates: dict[str, float] = {}
    for (plugin, name), seen in grouped.items():
        metrics = _fold(plugin, name, seen)
        if name == PLUGIN_ROW:
            rates[plugin] = figures(metrics)["successRate"]
    return rates


def _fold(plugin: str, name: str, seen: list[Outcome]) -> dict[str, Any]:
    row_id = f"{plugin}/{name}"
    query = Agent.select().where(Agent.id == row_id)
    if isinstance(models.database.obj, pw.PostgresqlDatabase):
        query = query.for_update()  # two brokers' recorders fold into the same row
    row = query.first()
    metrics = dict(row.metrics or {}) if row is not None else {}
    recent = [*metrics.get("recent", []), *([int(o.ok), round(o.ms, 1)] for o in seen)][-WINDOW:]
    metrics.update(
        calls=metrics.get("calls", 0) + len(seen),
        successes=metrics.get("successes", 0) + sum(o.ok for o in seen),
        recent=recent,
    )
    metrics.update({k: v for k, v in figures(metrics).items() if k not in ("calls", "successes")})
    now = models.now()
    if row is None:
        category = "plugin" if name == PLUGIN_ROW else "command"
        Agent.insert(
            id=row_id, plugin_id=plugin, name=name, category=category, status="available", metrics=metrics
        ).on_conflict_ignore().execute()
    else:
        Agent.update(metrics=metrics, updated_at=now).where(Agent.id == row_id).execute()
    return metrics


def registry(plugin: str | None = None) -> list[dict[str, Any]]:
    """Every learned row (a plugin's, with ``plugin``), as ``arbiter agents list`` shows them."""
    query = Agent.select().order_by(Agent.plugin_id, Agent.name)
    if plugin is not None:
        query = query.where(Agent.plugin_id == plugin)
    return [
        {
            "plugin": row.plugin_id,
            "name": row.name,
            **figures(row.metrics or {}),
            "updatedAt": events.iso(row.updated_at),
        }
        for row in query
    ]


def plugin_rates() -> dict[str, float]:
    """Each plugin's success rate over its window (plugins never sent work are absent)."""
    query = Agent.select(Agent.plugin_id, Agent.metrics).where(Agent.name == PLUGIN_ROW)
    return {row.plugin_id: rate for row in query if (rate := figures(row.metrics or {})["successRate"]) is not None}
