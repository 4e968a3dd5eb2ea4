"""The event log on SQLite and PostgreSQL: numbered in order, read from any point with the event
bus's topic patterns, pruned like the decision log; and a version 4 store brought to version 5
with its rows."""

from __future__ import annotations

import datetime as dt
from itertools import pairwise

import peewee as pw
import pytest

from arbiter.store import context, events, locks, migrations, models
from arbiter.store import database as state

TOPICS = [
    "state/global/change",
    "state/plugin:jira/change",
    "lock/res/acquired",
    "lock/res/released",
    "plugin/jira-sync/events",
    "plugin/jira/events",
    "state",
    "orchestration/chain/run1/step/done",
]


def _fill() -> list[int]:
    return [events.append(topic, "t", "agg", str(i), {"i": i}) for i, topic in enumerate(TOPICS)]


def _topics(**query: object) -> list[str]:
    return [event.topic for event in events.read(**query)]


def test_numbers_only_grow_and_say_where_the_log_is(store):
    assert events.latest_seq() == 0 and events.read() == []
    seqs = _fill()
    assert all(a < b for a, b in pairwise(seqs)) and events.latest_seq() == seqs[-1]
    logged = events.read()
    assert [e.seq for e in logged] == seqs and [e.payload for e in logged] == [{"i": i} for i in range(len(TOPICS))]
    first = logged[0].to_json()
    assert first["seq"] == seqs[0] and first["type"] == "t" and first["aggregate"] == {"type": "agg", "id": "0"}
    assert first["at"].endswith("Z") and dt.datetime.fromisoformat(first["at"][:-1]) == logged[0].at


def test_read_since_with_a_limit(store):
    seqs = _fill()
    assert [e.seq for e in events.read(since=seqs[2], limit=3)] == seqs[3:6]
    assert events.read(since=seqs[-1]) == [] and events.read(limit=0) == []


def test_read_by_prefix_and_by_pattern(store, monkeypatch):
    _fill()
    assert _topics(topic="state/") == TOPICS[:2]
    assert _topics(topic="lock/res/") == TOPICS[2:4]
    assert _topics(topic="State/") == []  # a prefix is case-sensitive on both databases
    assert _topics(topic="state/*/change") == TOPICS[:2]
    assert _topics(topic="state/**") == TOPICS[:2] + ["state"]  # ** matches no segment too
    assert _topics(topic="plugin/jira-*/events") == ["plugin/jira-sync/events"]
    assert _topics(topic="plugin/*/events") == TOPICS[4:6]
    assert _topics(topic="**/done") == [TOPICS[-1]]
    assert _topics(topic="lock/*/re*ed") == ["lock/res/released"]
    assert _topics(topic="**") == TOPICS
    monkeypatch.setattr(events, "READ_PAGE", 2)  # a pattern matched page by page
    assert _topics(topic="*/*/*", limit=3) == [TOPICS[0], TOPICS[1], TOPICS[2]]
    assert _topics(topic="**/events") == TOPICS[4:6]


def test_append_many_keeps_order_and_when_it_happened(store):
    at = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    rows = [
        {"topic": f"a/{i}", "event_type": "t", "aggregate_type": "x", "aggregate_id": str(i), "payload": i}
        for i in range(1200)  # more than one INSERT
    ]
    rows[0] = {**rows[0], "timestamp": at, "metadata": {"m": 1}}
    rows[1] = {**rows[1], "timestamp": at.replace(tzinfo=dt.timezone.utc).timestamp()}
    events.append_many(rows)
    events.append_many([])
    logged = events.read(limit=2000)
    assert [e.payload for e in logged] == list(range(1200))
    assert logged[0].at == logged[1].at == at and logged[0].metadata == {"m": 1}
    with pytest.raises(ValueError):
        events.append("a/*", "t", "x", "1", None)


def test_an_event_commits_with_its_change_or_not_at_all(store):
    class Refused(Exception):
        pass

    with pytest.raises(Refused), state.writing():
        events.append("a", "t", "x", "1", {})
        raise Refused
    assert events.latest_seq() == 0 and events.read() == []
    with state.writing():
        seq = events.append("a", "t", "x", "1", {})
    assert events.latest_seq() == seq


# ---------------------------------------------------------------- retention


def _age(seqs: list[int], days: float) -> None:
    past = models.now() - dt.timedelta(days=days)
    models.Event.update(timestamp=past).where(models.Event.seq.in_(seqs)).execute()


def test_prune_by_age_by_count_and_both(store):
    seqs = [events.append("a", "t", "x", str(i), i) for i in range(10)]
    _age(seqs[:4], days=40)
    _age(seqs[5:6], days=40)  # old, but after a newer one: kept until those before it go
    assert events.prune() == 0
    assert events.prune(dt.timedelta(days=30)) == 4
    assert [e.seq for e in events.read()] == seqs[4:]
    assert events.prune(max_rows=7) == 0
    assert events.prune(dt.timedelta(days=30), max_rows=3, batch=2) == 3
    assert [e.seq for e in events.read()] == seqs[7:]
    assert events.prune(max_rows=0, limit=2) == 2 and events.prune(max_rows=0) == 1
    assert events.read() == [] and events.latest_seq() == 0
    assert events.append("a", "t", "x", "again", 0) > seqs[-1]  # numbers are never given twice


# ---------------------------------------------------------------- schema version 5


class V4Event(pw.Model):
    id = pw.CharField(primary_key=True)
    event_type = pw.CharField()
    aggregate_id = pw.CharField()
    aggregate_type = pw.CharField()
    payload = models.JSONField()
    metadata = models.JSONField(null=True)
    timestamp = pw.DateTimeField()

    class Meta:
        database = models.database
        table_name = "events"
        indexes = ((("aggregate_type", "aggregate_id"), False),)


class V4Lock(pw.Model):
    resource_id = pw.CharField(primary_key=True)
    lock_holder = pw.CharField()
    lock_type = pw.CharField(constraints=[pw.Check("lock_type IN ('read', 'write')")])
    acquired_at = pw.DateTimeField()
    expires_at = pw.DateTimeField()
    metadata = models.JSONField(null=True)

    class Meta:
        database = models.database
        table_name = "distributed_locks"


def _make_version_4() -> dt.datetime:
    """The store as version 4 left it, with rows in the tables version 5 changes."""
    db = state.database.obj
    db.drop_tables([models.Event, models.DistributedLock, models.LockFence])
    db.create_tables([V4Event, V4Lock])
    models.Meta.update(value="4").where(models.Meta.key == "schema_version").execute()
    then = dt.datetime(2024, 1, 2, 3, 4, 5, 678901)
    for i, row_id in enumerate(["z-late", "a-early", "m-middle"]):  # ids in another order than time
        at = then + dt.timedelta(minutes={"a-early": 0, "m-middle": 1, "z-late": 2}[row_id])
        V4Event.create(
            id=row_id, event_type="made", aggregate_id=f"id{i}", aggregate_type="task", payload={"n": i}, timestamp=at
        )
    V4Lock.create(resource_id="res", lock_holder="old", lock_type="write", acquired_at=then, expires_at=then)
    models.SharedContext.create(context_type="global", key="kept", value={"v": 1}, owner_plugin="seed")
    state.close_store()
    return then


def test_a_version_4_store_is_brought_to_the_current_version_with_its_rows(store):
    then = _make_version_4()
    db = state.open_store(store)
    assert migrations.schema_version(db) == migrations.SCHEMA_VERSION
    logged = events.read()
    assert [(e.seq, e.topic, e.payload) for e in logged] == [
        (1, "task/id1/made", {"n": 1}),
        (2, "task/id2/made", {"n": 2}),
        (3, "task/id0/made", {"n": 0}),
    ]
    assert logged[0].at == then and events.append("new", "t", "x", "1", {}) == 4
    old = models.DistributedLock.get()
    assert (old.resource_id, old.lock_holder, old.lock_type, old.token, old.expires_at) == (
        "res",
        "old",
        "write",
        1,
        then,
    )
    assert models.LockFence.get_by_id("res").last_token == 1
    assert locks.acquire("res", "new", "write", dt.timedelta(seconds=5)).token == 2  # the old lease long expired
    assert context.get("global", "kept", "anyone").value == {"v": 1}
    assert context.put("global", "kept", {"v": 2}, "seed")[0].version == 2
    state.close_store()
    db = state.open_store(store)  # opening again changes nothing
    # and the expiry of the old lease
    assert migrations.schema_version(db) == migrations.SCHEMA_VERSION and len(events.read()) == 7


def test_a_seed_store_without_the_tables_gets_them(tmp_path):
    import sqlite3

    path = tmp_path / "seed.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE routing_decisions (id TEXT PRIMARY KEY, request_id TEXT NOT NULL)")
    con.close()
    db = state.open_store(f"sqlite:///{path}")
    try:
        assert migrations.schema_version(db) == migrations.SCHEMA_VERSION
        assert {"events", "distributed_locks", "lock_fences", "shared_context"} <= set(db.get_tables())
        assert events.append("a", "t", "x", "1", {}) == 1
    finally:
        state.close_store()
