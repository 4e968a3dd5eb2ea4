"""A chain start is idempotent by its request's messageId: the same start sent again (a client's
Lazy Pirate retry) answers with the run the first one started, on one broker with SQLite, before
and after the run ended and after a restart, and on two brokers sharing PostgreSQL when the broker
running the start is SIGKILLed while its client waits: the retry on the other broker waits for
the run through its lease and takeover, and gets its result. Real brokers, SDK workers, stores."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from broker_helpers import broker_with, state_rows, wait_until
from test_chain_faults import OVERRIDES, SEQUENCE, Workers, add_chains, assert_once, chain_request, workers
from test_multi_broker import _pg_rows, pg_url, served_by, two_brokers  # noqa: F401 (a fixture)

from arbiter.sdk.client import Client, Reply

pytestmark = pytest.mark.e2e


def _send(endpoint: str | list[str], request: dict[str, Any], timeout: float, retries: int = 0) -> Reply:
    with Client(endpoint, timeout=timeout, retries=retries) as client:
        return client.request("arbiter.chain", copy.deepcopy(request))


def _in_thread(job: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(job()), daemon=True)
    thread.start()
    return thread, out


def test_the_same_start_sent_twice_to_one_broker_starts_one_run(tmp_path: Path) -> None:
    with broker_with(tmp_path, OVERRIDES, add_chains) as broker, workers(broker, tmp_path) as pool:
        pool.spawn("--sleep", "three=1")
        wait_until(lambda: served_by(broker), 20, what="the worker registered")
        request = chain_request({"chain": "test-sequence", "params": {"value": "once"}})
        message_id = request["messageId"]
        first, answers = _in_thread(lambda: _send(broker.frontend, request, 30))
        wait_until(lambda: pool.holder(f"{_run_of(broker, message_id)}:three") is not None, 20, interval=0.02)
        again = _send(broker.frontend, request, 30)  # the retry, while the run goes on
        first.join(30)
        assert answers and answers[0].ok and again.ok, (answers, again.error)
        run_id = answers[0].result["runId"]
        assert again.result["runId"] == run_id
        assert answers[0].result["status"] == again.result["status"] == "completed"

        ended = _send(broker.frontend, request, 5)  # once it ended: answered at once, as it ended
        assert (ended.result["runId"], ended.result["status"]) == (run_id, "completed")

        broker.stop()
        broker.start()
        stored = _send(broker.frontend, request, 10)  # after a restart: found in the store
        assert (stored.result["runId"], stored.result["status"]) == (run_id, "completed"), stored.error
        assert [s["name"] for s in stored.result["steps"]] == list(SEQUENCE)
        assert stored.result["result"] == answers[0].result["result"]
        assert state_rows(broker.root, f"select id from tasks where message_id = '{message_id}'") == [(run_id,)]
        assert state_rows(broker.root, "select count(*) from tasks where parent_task_id is null") == [(1,)]
    assert_once(pool, run_id, SEQUENCE, ())


def _run_of(broker: Any, message_id: str) -> str | None:
    rows = state_rows(broker.root, f"select id from tasks where message_id = '{message_id}'")
    return rows[0][0] if rows else None


def test_a_start_whose_broker_is_killed_is_answered_by_the_other_with_one_run(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    with two_brokers(tmp_path, pg_url) as (a, b):
        pool = Workers(SimpleNamespace(frontend=f"{a.frontend},{b.frontend}"), tmp_path)  # type: ignore[arg-type]
        try:
            pool.spawn("--sleep", "three=2")
            wait_until(lambda: served_by(a) and served_by(b), 20, what="the worker registered with both brokers")
            request = chain_request({"chain": "test-sequence", "params": {"value": "failover"}})
            message_id = request["messageId"]
            # The client waits on a; its retry (same messageId) goes to b after 3 s.
            waiting, answers = _in_thread(lambda: _send([a.frontend, b.frontend], request, 3.0, retries=3))
            sql = "select id, lease_owner from tasks where message_id = %s"
            run_id, owner = wait_until(lambda: _pg_rows(pg_url, sql, message_id), 20)[0]
            assert owner == "a"
            wait_until(lambda: pool.holder(f"{run_id}:three") is not None, 20, interval=0.02)
            a.kill()
            killed = time.monotonic()
            # The same start sent to b at once, while a's lease still holds: b waits for the run.
            direct = _send(b.frontend, request, 30)
            assert direct.ok, direct.error
            assert (direct.result["runId"], direct.result["status"]) == (run_id, "completed")
            assert time.monotonic() - killed >= 0.5, "answered once the lease expired and b ran the rest"
            waiting.join(30)
            assert answers and answers[0].ok, answers
            assert (answers[0].result["runId"], answers[0].result["status"]) == (run_id, "completed")
            assert [s["status"] for s in answers[0].result["steps"]] == ["completed"] * len(SEQUENCE)
            assert _pg_rows(pg_url, "select count(*) from tasks where message_id = %s", message_id) == [(1,)]
            assert _pg_rows(pg_url, "select count(*) from tasks where parent_task_id is null and title = %s",
                            "test-sequence") == [(1,)]  # fmt: skip
            assert _pg_rows(pg_url, "select lease_owner from tasks where id = %s", run_id) == [("b",)]
        finally:
            pool.stop_all()
    assert_once(pool, run_id, SEQUENCE, ())
