"""Two brokers on one PostgreSQL store (a database of this module's own, dropped afterwards), SDK
workers connected to both, clients with the list: a broker SIGKILLed under load loses no request
and runs none twice; a chain run started on the killed broker completes on the survivor once its
lease expired; compare-and-set and locks through both brokers lose no update."""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import psycopg2
import pytest
from broker_helpers import wait_until
from click.testing import CliRunner
from test_chain_faults import PLUGIN, SEQUENCE, Workers, add_chains, assert_once, chain_request
from test_sdk_harness import Broker, free_port, make_project

from arbiter.cli import main as cli_main
from arbiter.sdk.client import Client
from arbiter.sdk.state import SharedState, StateError

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
LEASE_MS = 1500


def _admin() -> Any:
    con = psycopg2.connect(**PG, dbname="test", connect_timeout=3)
    con.autocommit = True
    return con


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A database of this module's own on the local PostgreSQL, dropped at the end."""
    try:
        con = _admin()
    except psycopg2.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    name = f"arbiter_multi_{uuid.uuid4().hex[:8]}"
    con.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        con.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        con.close()


@contextmanager
def two_brokers(tmp: Path, url: str) -> Iterator[tuple[Broker, Broker]]:
    """Brokers ``a`` and ``b``, each knowing both (``brokers``) and which one it is (its frontend)."""
    ports = {name: [free_port() for _ in range(3)] for name in ("a", "b")}
    listed = [
        {"name": name, **dict(zip(("frontend", "events_pub", "events_sub"), (f"tcp://127.0.0.1:{p}" for p in ps)))}
        for name, ps in ports.items()
    ]
    started: list[Broker] = []
    try:
        for entry in listed:
            folder = tmp / entry["name"]
            (folder / "project").mkdir(parents=True)
            (folder / "logs").mkdir()
            overrides = {"deciders": 0, "brokers": listed, "run_lease_ms": LEASE_MS}
            root = make_project(
                folder / "project", entry["frontend"], entry["events_pub"], entry["events_sub"], overrides
            )
            add_chains(root)
            state_yaml = root / "configs" / "state.yaml"
            state_yaml.write_text(state_yaml.read_text().replace("sqlite:///.arbiter/state.db", url))
            broker = Broker(root, entry["frontend"], entry["events_pub"], entry["events_sub"], folder / "logs")
            started.append(broker)
            broker.start()
        yield started[0], started[1]
    finally:
        for broker in started:
            broker.close()


def served_by(broker: Broker) -> int:
    with Client(broker.frontend, timeout=3, retries=1) as client:
        reply = client.request("mmi.service", PLUGIN.encode())
    return reply.text() == "200"


@contextmanager
def worker_on_both(tmp: Path, a: Broker, b: Broker, *options: str) -> Iterator[Workers]:
    """One chain_worker.py process (the SDK worker) connected to both brokers."""
    pool = Workers(SimpleNamespace(frontend=f"{a.frontend},{b.frontend}"), tmp)  # type: ignore[arg-type]
    try:
        pool.spawn(*options)
        wait_until(lambda: served_by(a) and served_by(b), 20, what="the worker registered with both brokers")
        yield pool
    finally:
        pool.stop_all()


# -- a broker killed under load -------------------------------------------------------------------


def test_a_broker_killed_under_load_loses_no_request_and_runs_none_twice(tmp_path: Path, pg_url: str) -> None:
    clients, each = 4, 40
    with two_brokers(tmp_path, pg_url) as (a, b), worker_on_both(tmp_path, a, b, "--delay", "0.02") as pool:
        answered: list[tuple[str, bool]] = []
        stats: list[Any] = []
        lock = threading.Lock()

        def load(n: int) -> None:
            order = [a.frontend, b.frontend] if n % 2 == 0 else [b.frontend, a.frontend]
            with Client(order, timeout=1.0, retries=3) as client:
                for i in range(each):
                    reply = client.call(PLUGIN, "one", {"value": f"{n}-{i}"})
                    with lock:
                        answered.append((reply.envelope["correlationId"], reply.ok))
                stats.append(client.stats)

        threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(clients)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(answered) >= clients * each // 4, 30, what="a quarter of the load answered")
        a.kill()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
    assert len(answered) == clients * each and all(ok for _, ok in answered), "0 lost"
    ran = pool.counts()
    assert {key for key, _ in answered} <= set(ran), "every answered request ran"
    assert [key for key, n in ran.items() if n > 1] == [], "0 executed twice"
    assert sum(s.failovers for s in stats) >= 1 and sum(s.retries for s in stats) >= 1, stats


# -- a chain run taken over --------------------------------------------------------------------------


def _pg_rows(url: str, sql: str, *args: Any) -> list[tuple]:
    con = psycopg2.connect(url)
    try:
        with con.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        con.close()


def test_a_chain_started_on_a_killed_broker_completes_on_the_other_after_its_lease(tmp_path: Path, pg_url: str) -> None:
    with two_brokers(tmp_path, pg_url) as (a, b), worker_on_both(tmp_path, a, b, "--sleep", "three=2") as pool:
        with Client(a.frontend, timeout=10, retries=0) as client:
            reply = client.request(
                "arbiter.chain", chain_request({"chain": "test-sequence", "params": {"value": "r"}, "wait": False})
            )
        assert reply.ok, reply.error
        run_id = reply.result["runId"]
        step = f"{run_id}:three"
        wait_until(lambda: pool.holder(step) == 0, 20, interval=0.02, what=f"the worker started {step}")
        leased = wait_until(lambda: _pg_rows(pg_url, "select lease_owner from tasks where id = %s", run_id), 10)
        assert leased == [("a",)]
        a.kill()
        started = time.monotonic()
        ended = wait_until(
            lambda: _pg_rows(
                pg_url, "select status, lease_owner from tasks where id = %s and status = 'completed'", run_id
            ),
            30,
            what=f"run {run_id} completed on b",
        )
        took = time.monotonic() - started
        assert ended == [("completed", "b")]
        assert took >= LEASE_MS / 1000 * 0.5, "taken over once the lease expired, not before"
        steps = dict(_pg_rows(pg_url, "select title, status from tasks where parent_task_id = %s", run_id))
        assert steps == dict.fromkeys(SEQUENCE, "completed")
    assert_once(pool, run_id, SEQUENCE, ())
    assert pool.received(step) >= 2, "the step in flight was sent again under its key, answered from the cache"


# -- shared state through both brokers ---------------------------------------------------------------


def _cas_increments(endpoint: str, who: str, key: str, times: int) -> int:
    """Read, then write version+1 only if nobody wrote in between; again on CONFLICT. Returns conflicts."""
    state = SharedState.connect(endpoint, who, timeout=20)
    conflicts = 0
    try:
        for _ in range(times):
            for _attempt in range(200):
                try:
                    entry = state.get("global", key)
                    state.cas("global", key, entry["value"] + 1, version=entry["version"])
                    break
                except StateError as exc:
                    assert exc.code == "CONFLICT", exc
                    conflicts += 1
            else:
                raise AssertionError("no write got through in 200 tries")
    finally:
        state.close()
    return conflicts


def _locked_increments(endpoint: str, who: str, key: str, times: int) -> None:
    """Under the write lock: read, then write with the lease's fencing token."""
    state = SharedState.connect(endpoint, who, timeout=20)
    try:
        for _ in range(times):
            with state.lock(f"res-{key}", ttl=10, wait=30) as lease:
                value = state.value("global", key, 0)
                state.put("global", key, value + 1, fence=lease)
    finally:
        state.close()


def test_compare_and_set_and_locks_through_both_brokers_lose_no_update(tmp_path: Path, pg_url: str) -> None:
    times, per_broker = 15, 2
    cas_key, lock_key = f"cas-{uuid.uuid4().hex[:6]}", f"locked-{uuid.uuid4().hex[:6]}"
    with two_brokers(tmp_path, pg_url) as (a, b):
        SharedState.connect(a.frontend, "setup").put("global", cas_key, 0)
        conflicts: list[int] = []
        jobs = []
        for n, broker in enumerate([a, b] * per_broker):
            jobs.append(lambda e=broker.frontend, n=n: conflicts.append(_cas_increments(e, f"c{n}", cas_key, times)))
            jobs.append(lambda e=broker.frontend, n=n: _locked_increments(e, f"l{n}", lock_key, times))
        threads = [threading.Thread(target=job, daemon=True) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in threads)
        total = times * per_broker * 2
        for broker in (a, b):
            reader = SharedState.connect(broker.frontend, "reader")
            assert reader.value("global", cas_key) == total
            assert reader.value("global", lock_key) == total
            reader.close()
        shown = CliRunner().invoke(cli_main, ["--root", str(a.root), "status", "--all", "--json"])
        assert shown.exit_code == 0, shown.output
        assert [(row["name"], bool(row["status"]["snapshot"]["fingerprint"])) for row in json.loads(shown.stdout)] == [
            ("a", True),
            ("b", True),
        ]
    assert len(conflicts) == per_broker * 2
