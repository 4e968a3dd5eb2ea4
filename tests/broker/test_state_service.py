"""``arbiter.state`` end to end: a real broker with its state keeper, clients of the SDK, the
event bus; and two brokers sharing one PostgreSQL store."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import uuid
from pathlib import Path
from typing import Any, Iterator

import orjson
import psycopg2
import pytest
import zmq
from broker_helpers import broker_with, status, subscriber, wait_until

from arbiter.sdk.client import Client
from arbiter.sdk.state import SharedState, StateError
from arbiter.state import crdt
from arbiter.wire import envelope as env

PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test", "user": "postgres"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with broker_with(tmp_path_factory.mktemp("state")) as started:
        yield started


def connect(broker: Any, who: str) -> SharedState:
    return SharedState.connect(broker.frontend, who, timeout=10)


def scope() -> str:
    """Tests share the broker: each works in a session scope of its own."""
    return f"session:{uuid.uuid4().hex[:8]}"


def test_compare_and_set_and_access_levels(broker: Any) -> None:
    alice, bob, where = connect(broker, "alice"), connect(broker, "bob"), scope()
    created = alice.put(where, "release", {"tag": "v2"}, access="protected", version=0)
    assert (created["version"], created["owner"], created["access"]) == (1, "alice", "protected")
    with pytest.raises(StateError) as conflict:
        alice.put(where, "release", {"tag": "x"}, version=0)  # create only: it exists
    assert conflict.value.code == "CONFLICT" and conflict.value.current["version"] == 1
    assert alice.cas(where, "release", {"tag": "v3"}, version=1)["version"] == 2
    with pytest.raises(StateError) as stale:
        alice.cas(where, "release", {"tag": "v4"}, version=1)
    assert stale.value.code == "CONFLICT" and stale.value.current["value"] == {"tag": "v3"}
    assert bob.get(where, "release")["value"] == {"tag": "v3"}  # protected: anyone reads
    with pytest.raises(StateError) as refused:
        bob.put(where, "release", "mine")
    assert refused.value.code == "FORBIDDEN"
    alice.put(where, "secret", 42, access="private")
    with pytest.raises(StateError) as hidden:
        bob.get(where, "secret")
    assert hidden.value.code in ("NOT_FOUND", "FORBIDDEN")
    assert [e["key"] for e in bob.list(where)] == ["release"]
    assert sorted(e["key"] for e in alice.list(where)) == ["release", "secret"]
    bob.put(where, "notes", "anyone")  # public by default: anyone writes
    assert alice.put(where, "notes", "edited")["version"] == 2
    alice.delete(where, "notes", version=2)
    assert alice.value(where, "notes", "gone") == "gone"


def test_every_change_is_published_on_its_scope_and_kept_in_the_log(broker: Any) -> None:
    where = scope()
    sub = subscriber(zmq.Context.instance(), broker, f"state/{where}/change")
    try:
        alice = connect(broker, "alice")
        first = alice.put(where, "k", 1)
        alice.put(where, "hidden", "s3cret", access="private")
        alice.incr(where, "k")
        seen = []
        while len(seen) < 3 and sub.poll(10_000):
            seen.append(orjson.loads(sub.recv_multipart()[1])["payload"])
        assert [(e["op"], e["key"]) for e in seen] == [("put", "k"), ("put", "hidden"), ("incr", "k")]
        assert seen[0]["value"] == 1 and seen[2]["value"] == 2 and "value" not in seen[1]  # private stays off
        logged = alice.log(since=first["seq"] - 1, topic=f"state/{where}/**")["events"]
        assert [e["seq"] for e in logged] == [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    finally:
        sub.close(linger=0)


def _increment(endpoint: str, where: str, times: int, who: str) -> None:
    state = SharedState.connect(endpoint, who, timeout=20)
    for _ in range(times):
        state.incr(where, "counter")
    state.close()


def test_concurrent_increments_from_processes_are_all_counted(broker: Any) -> None:
    where, times, procs = scope(), 100, 3
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_increment, args=(broker.frontend, where, times, f"p{n}")) for n in range(procs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert connect(broker, "reader").value(where, "counter") == times * procs


def test_locks_exclude_and_a_stale_fencing_token_is_refused(broker: Any) -> None:
    alice, bob, resource, where = (
        connect(broker, "alice"),
        connect(broker, "bob"),
        f"deploy-{uuid.uuid4().hex[:6]}",
        scope(),
    )
    first = alice.acquire(resource, ttl=0.3)
    with pytest.raises(StateError) as held:
        bob.acquire(resource, wait=0.05)
    assert held.value.code == "LOCKED" and held.value.details["holders"][0]["holder"] == "alice"
    second = bob.acquire(resource, ttl=30, wait=5)  # alice paused past her lease
    assert second["token"] > first["token"]
    with pytest.raises(StateError) as fenced:
        alice.put(where, "deployed", "v1", fence=first)
    assert fenced.value.code == "STALE_FENCE"
    assert bob.put(where, "deployed", "v2", fence=second)["value"] == "v2"
    readers = [connect(broker, f"r{n}").acquire(f"{resource}-r", mode="read", ttl=30) for n in range(2)]
    assert len({r["holder"] for r in readers}) == 2  # readers share
    assert any(lease["resource"] == resource for lease in alice.locks())
    assert bob.release(second)


@pytest.mark.parametrize(
    "payload,fragment",
    [
        ({"op": "nope"}, "payload.op must be one of"),
        ({"op": "get", "scope": "global"}, "needs payload.key"),
        ({"op": "put", "scope": 5, "key": "k", "value": 1}, "payload.scope must be a string"),
        ({"op": "put", "scope": "global", "key": "k", "value": 1, "version": "3"}, "payload.version must be"),
        ({"op": "put", "scope": "global", "key": "k", "value": 1, "version": True}, "payload.version must be"),
        ({"op": "put", "scope": "global", "key": "k", "value": 1, "access": "secret"}, "payload.access must be"),
        ({"op": "lock", "resource": "r", "ttlMs": -1}, "payload.ttlMs must be positive"),
        ({"op": "put", "scope": "global", "key": "k", "value": 1, "fence": {"resource": 1}}, "payload.fence must"),
        ({"op": "put", "scope": "nowhere", "key": "k", "value": 1}, ""),
    ],
)
def test_a_malformed_operation_is_refused_and_changes_nothing(broker: Any, payload: dict, fragment: str) -> None:
    before = connect(broker, "x").log()["latest"]
    request = env.new_request("arbiter.state", "", source="tests")
    request["payload"] = payload
    with Client(broker.frontend, timeout=10, retries=0) as client:
        reply = client.request("arbiter.state", request)
    assert not reply.ok and reply.error["code"] == "BAD_REQUEST" and fragment in reply.error["message"], reply.error
    assert connect(broker, "x").log()["latest"] == before


def test_a_killed_keeper_is_replaced_and_loses_nothing(broker: Any) -> None:
    alice, where = connect(broker, "alice"), scope()
    alice.put(where, "before", 1)
    (pid,) = _keeper_pids(broker)
    os.kill(pid, signal.SIGKILL)
    assert alice.put(where, "after", 2)["value"] == 2  # queued until the new keeper serves it
    assert alice.value(where, "before") == 1
    wait_until(lambda: status(broker.frontend)["stateKeepers"]["restarts"] >= 1, what="the keeper replaced")


def _keeper_pids(broker: Any) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"arbiter.broker.keepers" in cmdline and broker.frontend.encode() in cmdline:
                out.append(int(entry.name))
    return out


def test_without_keepers_shared_state_is_unavailable(tmp_path: Path) -> None:
    with broker_with(tmp_path, {"state_keepers": 0}) as plain:
        with pytest.raises(StateError) as off:
            connect(plain, "alice").get("global", "k")
    assert off.value.code == "UNAVAILABLE"


# -- two brokers, one PostgreSQL store -----------------------------------------------------------


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = "st2_" + uuid.uuid4().hex[:8]
    con = psycopg2.connect(**PG)
    con.autocommit = True
    con.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        con.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


def _merge_adds(endpoint: str, node: str, times: int) -> None:
    state = SharedState.connect(endpoint, node, timeout=20)
    for n in range(times):
        # every merge sends this node's whole contribution so far, as a replica would
        state.merge("global", "votes", _contribution(node, n + 1).to_json())
        state.incr("global", "plain")
    state.close()


def _contribution(node: str, upto: int) -> crdt.PNCounter:
    counter = crdt.PNCounter()
    for n in range(upto):
        counter = counter.increment(node, 1) if n % 4 else counter.decrement(node, 1)
    return counter


def test_two_brokers_on_one_postgresql_store_lose_no_update(tmp_path: Path, pg_schema: str) -> None:
    def on_pg(root: Path) -> None:
        (root / "configs" / "state.yaml").write_text(
            (root / "configs" / "state.yaml").read_text().replace("sqlite:///.arbiter/state.db", pg_schema)
        )

    times = 40
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with broker_with(tmp_path / "a", project=on_pg) as one, broker_with(tmp_path / "b", project=on_pg) as two:
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_merge_adds, args=(b.frontend, f"node-{n}", times)) for n, b in enumerate((one, two))
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(180)
            assert proc.exitcode == 0
        expected = sum(_contribution(f"node-{n}", times).value() for n in range(2))
        for each in (one, two):
            reader = connect(each, "reader")
            assert reader.value("global", "plain") == 2 * times
            assert crdt.from_json(reader.value("global", "votes")).value() == expected


# -- the event log -------------------------------------------------------------------------------


def test_a_subscriber_that_missed_events_catches_up_from_the_log(broker: Any) -> None:
    where = scope()
    sub = subscriber(zmq.Context.instance(), broker, f"state/{where}/change")
    alice = connect(broker, "alice")
    try:
        alice.put(where, "a", 1)
        assert sub.poll(10_000)
        last_seen = orjson.loads(sub.recv_multipart()[1])["payload"]["seq"]
    finally:
        sub.close(linger=0)  # the subscriber goes away; changes go on
    missed = [alice.put(where, key, n)["seq"] for n, key in enumerate("bcd")]
    caught_up = alice.log(since=last_seen, topic=f"state/{where}/change")["events"]
    assert [e["seq"] for e in caught_up] == missed
    assert [e["payload"]["key"] for e in caught_up] == ["b", "c", "d"]


def test_decisions_chain_steps_and_dead_letters_are_in_the_log(broker: Any) -> None:
    reader = connect(broker, "reader")
    start = reader.log()["latest"]
    request = env.new_request("arbiter.route", "", source="tests")
    request["payload"] = {"text": "zxqv wqpl vvvv"}  # no plugin fits: still a decision
    with Client(broker.frontend, timeout=10, retries=0) as client:
        assert client.request("arbiter.route", request).error["code"] == "NO_ROUTE"
        expiring = env.new_request("nobody-serves-this", "x", source="tests", timeout_ms=200)
        assert client.request("nobody-serves-this", expiring).error["code"] == "EXPIRED"

    def logged() -> list[str] | None:
        topics = [e["topic"] for e in reader.log(since=start)["events"]]
        return topics if {"routing/decision", "system/dead-letter"} <= set(topics) else None

    topics = wait_until(logged, what="the decision and the dead letter in the log")
    assert topics.count("routing/decision") == 1 and topics.count("system/dead-letter") == 1


# -- the command line ----------------------------------------------------------------------------


def test_the_command_line_reads_and_writes_through_the_broker(broker: Any) -> None:
    from click.testing import CliRunner

    from arbiter.cli import main

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, ["--root", str(broker.root), *args])

    where, endpoint = scope(), ("--endpoint", broker.frontend)
    put = cli("state", "put", where, "release", '{"tag": "v2"}', "--access", "protected", "--as", "ci", *endpoint)
    assert put.exit_code == 0 and json.loads(put.stdout) == {"tag": "v2"}, put.output
    refused = cli("state", "cas", where, "release", '"v3"', "--version", "7", "--as", "ci", *endpoint)
    assert refused.exit_code == 1 and "CONFLICT" in refused.output and "now at version 1" in refused.output
    other = cli("state", "put", where, "release", "x", "--as", "someone-else", *endpoint)
    assert other.exit_code == 1 and "FORBIDDEN" in other.output
    assert cli("state", "cas", where, "release", '"v3"', "--version", "1", "--as", "ci", *endpoint).exit_code == 0
    counted = [cli("state", "incr", where, "n", "--by", "2", "--json", *endpoint) for _ in range(2)]
    assert json.loads(counted[-1].stdout)["value"] == 4
    listed = json.loads(cli("state", "list", where, "--json", *endpoint).stdout)
    assert {(e["key"], e["version"]) for e in listed} == {("release", 2), ("n", 2)}
    got = cli("state", "get", where, "release", "--json", *endpoint)
    assert json.loads(got.stdout)["value"] == "v3"
    assert cli("state", "get", where, "nothing", *endpoint).exit_code == 1
    logged = cli("log", "--topic", f"state/{where}/**", "--json")
    lines = [json.loads(line) for line in logged.stdout.splitlines()]
    assert [e["payload"]["key"] for e in lines] == ["release", "release", "n", "n"], logged.output
    lease = connect(broker, "holder").acquire(f"cli-{uuid.uuid4().hex[:6]}", ttl=30)
    held = json.loads(cli("locks", "list", "--json").stdout)
    assert any(x["resource"] == lease["resource"] and x["holder"] == "holder" for x in held)
    assert cli("state", "put", where, "k", "1", "--ttl", "soon", *endpoint).exit_code == 2


def test_a_workers_handler_shares_state_through_the_broker(broker: Any) -> None:
    from arbiter.sdk.state import ThreadLocalState
    from arbiter.sdk.worker import Worker

    where = scope()
    worker = Worker(broker.frontend, "exec-automator", credit=4, heartbeat_interval=0.5)
    shared = ThreadLocalState(broker.frontend, source="exec-automator")

    @worker.command("count-visit")
    def count(parameters: dict, envelope: dict) -> dict:
        return {"visits": shared().incr(where, "visits")["value"]}

    worker.start()
    try:
        with Client(broker.frontend, timeout=10, retries=0) as client:
            wait_until(lambda: client.mmi("exec-automator") == "200", what="the worker registered")
            seen = [client.call("exec-automator", "count-visit").result["visits"] for _ in range(5)]
    finally:
        worker.stop(timeout=5)
    assert seen == [1, 2, 3, 4, 5]
    assert connect(broker, "reader").get(where, "visits")["owner"] == "exec-automator"
