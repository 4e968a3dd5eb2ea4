"""Shared context entries on SQLite and PostgreSQL: compare-and-set, access levels, expiry, atomic
counters and merges, one event per change, and the table rebuilt from the log alone."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from arbiter.store import context, events, locks, models
from arbiter.store.context import StateError

G = "global"


def _code(call: Any, *args: Any, **kwargs: Any) -> StateError:
    with pytest.raises(StateError) as caught:
        call(*args, **kwargs)
    return caught.value


def _table() -> list[dict[str, Any]]:
    """Every row, every column, as the database gives them back."""
    return list(models.SharedContext.select().order_by(models.SharedContext.id).dicts())


# ---------------------------------------------------------------- versions and compare-and-set


def test_put_creates_at_version_1_and_each_write_adds_one(store):
    entry, seq = context.put(G, "k", {"a": 1}, "alpha")
    assert (entry.value, entry.owner, entry.access, entry.version) == ({"a": 1}, "alpha", "public", 1)
    assert entry.created_at == entry.updated_at and entry.expires_at is None
    again, seq2 = context.put(G, "k", [1, 2], "beta")  # unconditional: anyone writes a public entry
    assert again.version == 2 and again.owner == "alpha" and again.created_at == entry.created_at
    assert seq2 > seq
    assert context.get(G, "k", "gamma") == again
    as_json, _ = context.put(G, "t", (1, {"x": (2,)}), "alpha")  # what is returned is what reads back
    assert as_json.value == [1, {"x": [2]}] == context.get(G, "t", "alpha").value


def test_create_only_and_compare_and_set(store):
    created, _ = context.put(G, "k", 1, "alpha", version=0)
    conflict = _code(context.put, G, "k", 2, "alpha", version=0)
    assert conflict.code == context.CONFLICT and conflict.current == created
    updated, _ = context.put(G, "k", 2, "alpha", version=1)
    stale = _code(context.put, G, "k", 3, "beta", version=1)
    assert stale.code == context.CONFLICT and stale.current == updated and stale.current.version == 2
    assert stale.to_json()["current"]["version"] == 2
    missing = _code(context.put, G, "absent", 1, "alpha", version=3)
    assert missing.code == context.CONFLICT and missing.current is None
    assert context.get(G, "k", "alpha").value == 2


def test_delete_with_and_without_a_version(store):
    context.put(G, "k", 1, "alpha")
    context.put(G, "k", 2, "alpha")
    assert _code(context.delete, G, "k", "alpha", version=1).current.version == 2
    seq = context.delete(G, "k", "alpha", version=2)
    assert seq == events.latest_seq()
    assert _code(context.get, G, "k", "alpha").code == context.NOT_FOUND
    assert _code(context.delete, G, "k", "alpha").code == context.NOT_FOUND
    recreated, _ = context.put(G, "k", 3, "beta")
    assert recreated.version == 1 and recreated.owner == "beta"


def test_bad_requests_are_refused_before_anything_is_written(store):
    for scope in ("", "plugins:x", "plugin:", "plugin:a/b", "run:*", "session:a b", "GLOBAL"):
        assert _code(context.put, scope, "k", 1, "alpha").code == context.BAD_REQUEST, scope
    for scope in ("global", "plugin:jira-sync", "run:0f3a", "session:user@host:42"):
        context.put(scope, "k", 1, "alpha")
    assert _code(context.put, G, "", 1, "alpha").code == context.BAD_REQUEST
    assert _code(context.put, G, "x" * 256, 1, "alpha").code == context.BAD_REQUEST
    assert _code(context.put, G, "k", None, "alpha").code == context.BAD_REQUEST
    assert _code(context.put, G, "k", object(), "alpha").code == context.BAD_REQUEST
    assert _code(context.put, G, "k", 1, "alpha", access="secret").code == context.BAD_REQUEST
    assert _code(context.put, G, "k", 1, "alpha", ttl=dt.timedelta(0)).code == context.BAD_REQUEST
    assert _code(context.put, G, "k", 1, "alpha", version=-1).code == context.BAD_REQUEST
    assert _code(context.put, G, "k", 1, "").code == context.BAD_REQUEST
    assert _code(context.list_entries, "nowhere", "alpha").code == context.BAD_REQUEST
    assert events.latest_seq() == 4  # the four good puts


# ---------------------------------------------------------------- access levels


def test_public_entries_are_read_and_written_by_anyone(store):
    context.put(G, "pub", 1, "owner")
    assert context.get(G, "pub", "other").value == 1
    assert context.put(G, "pub", 2, "other")[0].owner == "owner"
    assert _code(context.put, G, "pub", 3, "other", access="private").code == context.FORBIDDEN
    context.delete(G, "pub", "other")


def test_protected_entries_are_read_by_anyone_and_written_by_the_owner(store):
    context.put(G, "prot", 1, "owner", access="protected")
    assert context.get(G, "prot", "other").value == 1
    assert _code(context.put, G, "prot", 2, "other").code == context.FORBIDDEN
    assert _code(context.incr, G, "prot", "other").code == context.FORBIDDEN
    assert _code(context.delete, G, "prot", "other").code == context.FORBIDDEN
    assert context.put(G, "prot", 2, "owner")[0].version == 2
    opened, _ = context.put(G, "prot", 3, "owner", access="public")  # the owner may change it
    assert opened.access == "public" and context.put(G, "prot", 4, "other")[0].access == "public"


def test_private_entries_are_absent_to_anyone_but_the_owner(store):
    context.put(G, "priv", {"secret": 1}, "owner", access="private")
    context.put(G, "pub", 1, "owner")
    assert context.get(G, "priv", "owner").value == {"secret": 1}
    for call, args in (
        (context.get, ()),
        (context.delete, ()),
        (context.incr, ()),
    ):
        refused = _code(call, G, "priv", "other", *args)
        assert refused.code == context.NOT_FOUND and refused.current is None
    for version in (None, 0, 1):
        refused = _code(context.put, G, "priv", 2, "other", version=version)
        assert refused.code == context.NOT_FOUND and refused.current is None, version
    merged = _code(context.merge, G, "priv", 1, "other", lambda old, new: pytest.fail("saw a private value"))
    assert merged.code == context.NOT_FOUND
    assert [e.key for e in context.list_entries(G, "other")] == ["pub"]
    assert [e.key for e in context.list_entries(G, "owner")] == ["priv", "pub"]
    assert context.get(G, "priv", "owner").version == 1


# ---------------------------------------------------------------- expiry


def test_expired_entries_are_absent_and_replaced_like_none(store, clock):
    context.put(G, "short", 1, "owner", ttl=dt.timedelta(seconds=5), access="protected")
    context.put(G, "long", 1, "owner")
    clock.advance(seconds=4)
    assert context.get(G, "short", "other").value == 1
    updated, _ = context.put(G, "short", 2, "owner")  # an update keeps the expiry it had
    assert updated.expires_at == updated.created_at + dt.timedelta(seconds=5)
    clock.advance(seconds=1)
    assert _code(context.get, G, "short", "owner").code == context.NOT_FOUND
    assert [e.key for e in context.list_entries(G, "owner")] == ["long"]
    assert _code(context.delete, G, "short", "owner").code == context.NOT_FOUND
    assert _code(context.put, G, "short", 3, "other", version=2).current is None
    reborn, _ = context.put(G, "short", 3, "other", version=0)  # another owner now: the old one is gone
    assert (reborn.version, reborn.owner, reborn.access, reborn.expires_at) == (1, "other", "public", None)
    assert models.SharedContext.select().count() == 2


def test_purge_expired_removes_each_with_an_event(store, clock):
    for key in ("a", "b", "c"):
        context.put(G, key, 1, "owner", ttl=dt.timedelta(seconds=1))
    context.put(G, "kept", 1, "owner", ttl=dt.timedelta(hours=1))
    before = events.latest_seq()
    assert context.purge_expired() == 0
    clock.advance(seconds=2)
    assert context.purge_expired(limit=2) == 2
    assert context.purge_expired() == 1
    assert [e.key for e in context.list_entries(G, "owner")] == ["kept"]
    removed = events.read(since=before)
    assert [(e.type, e.payload["key"], e.payload["deleted"]) for e in removed] == [
        ("delete", key, True) for key in ("a", "b", "c")
    ]


def test_a_ttl_on_write_restarts_the_expiry(store, clock):
    first, _ = context.put(G, "k", 1, "owner", ttl=dt.timedelta(seconds=10))
    clock.advance(seconds=8)
    second, _ = context.incr(G, "k", "owner", ttl=dt.timedelta(seconds=10))
    assert second.value == 2 and second.expires_at == clock.now + dt.timedelta(seconds=10)
    clock.advance(seconds=8)
    assert context.get(G, "k", "owner").value == 2


# ---------------------------------------------------------------- fencing tokens


def test_a_write_fenced_by_a_stale_token_is_refused(store, clock):
    first = locks.acquire("doc", "w1", "write", dt.timedelta(seconds=5))
    context.put(G, "doc", "by w1", "w1", fence=("doc", first.token))
    clock.advance(seconds=6)  # w1 pauses past its lease, and w2 gets the lock
    second = locks.acquire("doc", "w2", "write", dt.timedelta(seconds=5))
    assert second.token > first.token
    refused = _code(context.put, G, "doc", "late w1", "w1", fence=("doc", first.token))
    assert refused.code == context.STALE_FENCE
    assert _code(context.delete, G, "doc", "w1", fence=("doc", first.token)).code == context.STALE_FENCE
    context.put(G, "doc", "by w2", "w2", fence=("doc", second.token))
    assert context.get(G, "doc", "w1").value == "by w2"
    context.put(G, "other", 1, "w1", fence=("never-locked", 0))  # no grant yet: nothing is stale


# ---------------------------------------------------------------- counters and merges


def test_incr_creates_counts_and_refuses_what_is_no_integer(store):
    assert context.incr(G, "n", "alpha")[0].value == 1
    assert context.incr(G, "n", "beta", 5)[0].value == 6
    assert context.incr(G, "n", "beta", -10)[0].version == 3
    assert context.get(G, "n", "alpha").value == -4
    context.put(G, "text", "x", "alpha")
    context.put(G, "flag", True, "alpha")
    assert _code(context.incr, G, "text", "alpha").code == context.BAD_REQUEST
    assert _code(context.incr, G, "flag", "alpha").code == context.BAD_REQUEST
    assert _code(context.incr, G, "n", "alpha", 1.5).code == context.BAD_REQUEST


def _union(old: Any, new: Any) -> Any:
    return sorted(set(old or []) | set(new))


def test_merge_combines_with_the_function_given(store):
    assert context.merge(G, "set", ["b"], "alpha", _union)[0].value == ["b"]
    entry, _ = context.merge(G, "set", ["a", "c"], "beta", _union)
    assert entry.value == ["a", "b", "c"] and entry.version == 2 and entry.owner == "alpha"


def test_merge_starts_over_when_someone_wrote_in_between(store):
    context.put(G, "set", ["a"], "alpha")
    seen: list[Any] = []

    def interfering(old: Any, new: Any) -> Any:
        seen.append(old)
        if len(seen) == 1:  # another writer lands between the read and the write
            context.put(G, "set", ["a", "x"], "beta")
        return _union(old, new)

    entry, _ = context.merge(G, "set", ["b"], "alpha", interfering)
    # the interfering write was made inside the refused attempt's transaction, so it went with it
    assert seen == [["a"], ["a"]] and entry.value == ["a", "b"] and entry.version == 2

    def always_interfering(old: Any, new: Any) -> Any:
        context.put(G, "set", ["z"], "beta")
        return new

    assert _code(context.merge, G, "set", ["c"], "alpha", always_interfering).code == context.CONFLICT


# ---------------------------------------------------------------- listing


def test_list_entries_by_key_with_a_prefix_and_a_limit(store):
    for key in ("b/2", "a/1", "b/1", "B/3", "c"):
        context.put("run:r1", key, key, "alpha")
    context.put("run:r2", "b/9", 1, "alpha")
    assert [e.key for e in context.list_entries("run:r1", "x")] == sorted(["b/2", "a/1", "b/1", "B/3", "c"])
    assert [e.key for e in context.list_entries("run:r1", "x", prefix="b/")] == ["b/1", "b/2"]
    assert [e.key for e in context.list_entries("run:r1", "x", limit=2)] == sorted(["a/1", "B/3"])
    assert context.list_entries("run:r3", "x") == []


# ---------------------------------------------------------------- the event log


def test_each_change_appends_one_event_that_says_it_all(store):
    start = events.latest_seq()
    put, seq1 = context.put("plugin:jira", "k", {"v": 1}, "jira", access="protected")
    bumped, seq2 = context.incr(G, "n", "jira")
    seq3 = context.delete("plugin:jira", "k", "jira")
    logged = events.read(since=start)
    assert [e.seq for e in logged] == [seq1, seq2, seq3]
    assert [(e.topic, e.type, e.aggregate_type, e.aggregate_id) for e in logged] == [
        ("state/plugin:jira/change", "put", "context", "plugin:jira/k"),
        ("state/global/change", "put", "context", "global/n"),
        ("state/plugin:jira/change", "delete", "context", "plugin:jira/k"),
    ]
    assert logged[0].payload == put.to_json() and logged[1].payload == bumped.to_json()
    assert logged[2].payload == {"scope": "plugin:jira", "key": "k", "deleted": True, "version": 1}
    refused = _code(context.put, "plugin:jira", "n", 1, "jira", version=5)
    assert refused.code == context.CONFLICT and events.latest_seq() == seq3  # nothing changed, nothing logged


def test_the_log_alone_rebuilds_the_table_exactly(store, clock):
    context.put(G, "a", {"nested": [1, 2.5, "x", None, True]}, "alpha")
    context.put(G, "b", "private", "alpha", access="private", ttl=dt.timedelta(hours=1))
    context.put("plugin:p", "c", 1, "beta", access="protected")
    for _ in range(3):
        context.incr("run:r1", "n", "gamma")
    context.put(G, "gone", 1, "alpha")
    context.delete(G, "gone", "alpha")
    context.put(G, "a", {"replaced": "é ✓"}, "beta")
    context.put(G, "short", 1, "alpha", ttl=dt.timedelta(seconds=1))
    context.put(G, "expired", 1, "alpha", ttl=dt.timedelta(seconds=1))
    clock.advance(seconds=2)
    context.put(G, "short", 2, "beta")  # replaces the expired entry
    context.merge(G, "set", ["q"], "alpha", _union)
    context.put(G, "gone", 2, "delta", version=0)
    context.delete(G, "gone", "delta")
    original = _table()
    assert len(original) == 7  # the expired entry not purged yet is a row all the same
    models.SharedContext.delete().execute()
    assert context.rebuild_from_log() == 7
    assert _table() == original
    assert context.get("run:r1", "n", "x").value == 3


# ---------------------------------------------------------------- two processes at once

INCR = """
from arbiter.store import context
for _ in range(int(sys.argv[4])):
    context.incr("global", "counter", ME)
state.close_store()
"""


def test_incr_is_atomic_between_two_processes(store, together):
    n = 100
    together(INCR, [[store, "p1", str(n)], [store, "p2", str(n)]])
    counter = context.get(G, "counter", "x")
    assert counter.value == 2 * n and counter.version == 2 * n


CAS = """
import json
from arbiter.store import context
won, lost = [], 0
for _ in range(int(sys.argv[4])):
    seen = context.get("global", "race", ME)
    try:
        context.put("global", "race", [ME, seen.version], ME, version=seen.version)
        won.append(seen.version)
    except context.StateError as exc:
        assert exc.code == "CONFLICT" and exc.current.version > seen.version, exc.to_json()
        lost += 1
print(json.dumps({"won": won, "lost": lost}))
state.close_store()
"""


def test_compare_and_set_has_one_winner_per_version_between_two_processes(store, together):
    context.put(G, "race", ["nobody", 0], "setup")
    outputs = together(CAS, [[store, "p1", "100"], [store, "p2", "100"]])
    results = [json.loads(out) for out in outputs]
    wins = [version for result in results for version in result["won"]]
    final = context.get(G, "race", "x")
    assert len(wins) == len(set(wins)), "two writers won on the same version"
    assert sorted(wins) == list(range(1, final.version))
    assert sum(len(r["won"]) + r["lost"] for r in results) == 200
    winner_of_last = final.value[0]
    assert final.value[1] == final.version - 1 and winner_of_last in ("p1", "p2")
