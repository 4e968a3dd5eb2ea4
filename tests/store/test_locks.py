"""Read/write locks on SQLite and PostgreSQL: readers share, a writer excludes, leases expire,
fencing tokens only grow, and two processes never hold a write lock at once."""

from __future__ import annotations

import datetime as dt
import json
from itertools import pairwise

import pytest

from arbiter.store import events, locks, models
from arbiter.store.context import StateError

TTL = dt.timedelta(seconds=10)


def test_readers_share_and_a_writer_excludes(store, clock):
    r1 = locks.acquire("res", "r1", "read", TTL)
    r2 = locks.acquire("res", "r2", "read", TTL)
    assert r1 and r2 and r1.mode == r2.mode == "read"
    assert locks.acquire("res", "w", "write", TTL) is None
    assert [lease.holder for lease in locks.holders("res")] == ["r1", "r2"]
    assert locks.release("res", "r1", r1.token) and locks.release("res", "r2", r2.token)
    writer = locks.acquire("res", "w", "write", TTL)
    assert writer is not None and writer.token > r2.token
    assert locks.acquire("res", "r3", "read", TTL) is None
    assert locks.acquire("res", "w2", "write", TTL) is None
    assert locks.acquire("elsewhere", "r3", "write", TTL) is not None  # resources are apart
    assert [(lease.resource, lease.holder) for lease in locks.list_leases()] == [("elsewhere", "r3"), ("res", "w")]


def test_an_expired_lease_no_longer_counts(store, clock):
    writer = locks.acquire("res", "w", "write", TTL)
    clock.advance(seconds=9)
    assert locks.acquire("res", "r", "read", TTL) is None
    clock.advance(seconds=1)
    assert locks.holders("res") == [] and locks.list_leases() == []
    reader = locks.acquire("res", "r", "read", TTL)
    assert reader is not None and reader.token == writer.token + 1
    assert [row.lock_holder for row in models.DistributedLock.select()] == ["r"]  # the expired one went
    assert locks.release("res", "w", writer.token) is False


def test_tokens_only_grow_across_expiry_release_and_resources(store, clock):
    tokens = []
    for round_ in range(3):
        lease = locks.acquire("res", f"h{round_}", "write", TTL)
        tokens.append(lease.token)
        if round_ % 2:
            locks.release("res", lease.holder, lease.token)
        else:
            clock.advance(seconds=11)
    tokens.append(locks.acquire("res", "reader", "read", TTL).token)
    tokens.append(locks.acquire("res", "reader2", "read", TTL).token)
    assert tokens == sorted(set(tokens)) == list(range(1, 6))
    assert locks.acquire("other", "h", "write", TTL).token == 1  # a counter per resource
    assert locks.fence_ok("res", 5) and not locks.fence_ok("res", 4) and locks.fence_ok("new", 0)
    assert models.LockFence.get_by_id("res").last_token == 5


def test_acquiring_again_renews_and_a_change_of_mode_is_a_new_grant(store, clock):
    lease = locks.acquire("res", "h", "read", TTL)
    clock.advance(seconds=5)
    again = locks.acquire("res", "h", "read", TTL)
    assert again.token == lease.token and again.expires_at == clock.now + TTL
    upgraded = locks.acquire("res", "h", "write", TTL)  # the only reader may become the writer
    assert upgraded.token == lease.token + 1 and upgraded.mode == "write"
    assert [(x.holder, x.mode) for x in locks.holders("res")] == [("h", "write")]
    assert locks.acquire("res", "other", "read", TTL) is None
    assert locks.acquire("res", "other", "read", TTL) is None
    locks.acquire("res2", "a", "read", TTL)
    locks.acquire("res2", "b", "read", TTL)
    assert locks.acquire("res2", "a", "write", TTL) is None  # not while another reads


def test_renew_extends_only_the_lease_held_with_its_token(store, clock):
    lease = locks.acquire("res", "h", "write", TTL)
    clock.advance(seconds=8)
    renewed = locks.renew("res", "h", lease.token, TTL)
    assert renewed.token == lease.token and renewed.expires_at == clock.now + TTL
    with pytest.raises(locks.LockError) as wrong:
        locks.renew("res", "h", lease.token + 1, TTL)
    assert wrong.value.code == "STALE_FENCE"
    with pytest.raises(StateError) as stranger:
        locks.renew("res", "someone", lease.token, TTL)
    assert stranger.value.code == "NOT_FOUND"
    clock.advance(seconds=11)
    with pytest.raises(locks.LockError) as lapsed:
        locks.renew("res", "h", lease.token, TTL)
    assert lapsed.value.code == "NOT_FOUND"


def test_bad_requests(store):
    for args in (
        ("", "h", "write", TTL),
        ("a/b", "h", "write", TTL),
        ("a*", "h", "write", TTL),
        ("res", "", "write", TTL),
        ("res", "h", "exclusive", TTL),
        ("res", "h", "write", dt.timedelta(0)),
    ):
        with pytest.raises(StateError) as refused:
            locks.acquire(*args)
        assert refused.value.code == "BAD_REQUEST", args
    assert models.LockFence.select().count() == 0


def test_grants_releases_and_expiries_are_logged(store, clock):
    start = events.latest_seq()
    a = locks.acquire("res", "a", "read", TTL)
    locks.acquire("res", "a", "read", TTL)  # a renewal: no event
    b = locks.acquire("res", "b", "read", TTL)
    assert locks.acquire("res", "c", "write", TTL) is None  # refused: no event
    locks.release("res", "a", a.token)
    clock.advance(seconds=11)
    c = locks.acquire("res", "c", "write", TTL)
    logged = events.read(since=start)
    assert [(e.topic, e.type, e.payload["holder"], e.payload["token"]) for e in logged] == [
        ("lock/res/acquired", "acquired", "a", 1),
        ("lock/res/acquired", "acquired", "b", 2),
        ("lock/res/released", "released", "a", 1),
        ("lock/res/expired", "expired", "b", 2),
        ("lock/res/acquired", "acquired", "c", 3),
    ]
    assert logged[1].payload == b.to_json() and logged[-1].payload == c.to_json()
    assert {e.aggregate_type for e in logged} == {"lock"} and {e.aggregate_id for e in logged} == {"res"}


# ---------------------------------------------------------------- two processes at once

CONTEND = """
import datetime as dt, json
from arbiter.store import locks
held, refused = [], 0
deadline = time.monotonic() + 60
while len(held) < int(sys.argv[4]) and time.monotonic() < deadline:
    lease = locks.acquire("res", ME, "write", dt.timedelta(seconds=30))
    if lease is None:
        refused += 1
        time.sleep(0.001)
        continue
    start = time.time()
    assert [h.holder for h in locks.holders("res")] == [ME]
    time.sleep(0.002)
    end = time.time()
    assert locks.release("res", ME, lease.token)
    held.append([start, end, lease.token])
print(json.dumps({"held": held, "refused": refused}))
state.close_store()
"""


def test_two_processes_never_hold_the_write_lock_at_once(store, together):
    n = 25
    outputs = together(CONTEND, [[store, "p1", str(n)], [store, "p2", str(n)]])
    results = [json.loads(out) for out in outputs]
    assert [len(r["held"]) for r in results] == [n, n]
    spans = sorted(span for r in results for span in r["held"])
    for (_, end, token), (start, _, next_token) in pairwise(spans):
        assert end < start, "both held the write lock at once"
        assert token < next_token, "a later grant drew a smaller token"
    assert sorted(span[2] for span in spans) == list(range(1, 2 * n + 1))
