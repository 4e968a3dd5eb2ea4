"""A request that kills every worker it reaches stops after ``limits.max_deliveries`` deliveries
(dead-lettered as poison), and a direct request held by a worker that never answers expires at
its deadline instead of waiting for ever. Real broker and worker processes."""

from __future__ import annotations

import time

import pytest
import zmq
from broker_helpers import RawWorker, broker_with, dealer, recv, reply_envelope, state_rows, status, wait_until
from test_faults import processes, spawn_worker, wait_workers

from arbiter.sdk.client import Client
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01

pytestmark = pytest.mark.e2e


def test_a_poison_request_is_dead_lettered_after_max_deliveries_and_the_rest_is_served(tmp_path):
    with broker_with(tmp_path, {"limits": {"max_deliveries": 2}}) as broker, processes() as running:
        logs = [tmp_path / f"worker{i}.log" for i in range(3)]
        for log in logs:
            running.append(spawn_worker(broker, "svc", log, mode="die", credit=1))
        wait_workers(broker, "svc", 3)
        with Client(broker.frontend, timeout=30, retries=0) as client:
            poison = client.request("svc", env.new_request("svc", "work", {"poison": True, "id": "p"}))
            assert poison.error["code"] == "POISON", poison.envelope
            assert "2 workers were lost" in poison.error["message"]
            healthy = client.request("svc", env.new_request("svc", "work", {"id": "h"}))
            assert healthy.ok and healthy.result["id"] == "h"  # the third worker never saw the poison
        assert sum(p.poll() is not None for p in running) == 2
        rows = wait_until(lambda: state_rows(broker.root, "SELECT reason, service FROM dead_letters"))
        assert rows == [("poison", "svc")]
        counters = status(broker.frontend)["counters"]
        assert counters["poisoned"] == 1 and counters["dead-letters-poison"] == 1
        assert status(broker.frontend)["pending"] == 0


def test_a_request_held_by_a_hung_worker_expires_at_its_deadline(tmp_path):
    with broker_with(tmp_path, {"request_timeout_ms": 800}) as broker:
        ctx = zmq.Context.instance()
        hung = RawWorker(ctx, broker.frontend, "svc")
        client = dealer(ctx, broker.frontend)
        try:
            request = env.new_request("svc", "work", {"id": 1})
            client.send_multipart([b"", MDPC01, b"svc", env.encode(request)])
            taken = hung.next_request()
            assert taken is not None  # the worker holds it, and never answers
            started = time.monotonic()
            reply = recv(client, 10)
            assert reply is not None, "the client was never answered"
            assert time.monotonic() - started < 5
            error = reply_envelope(reply)["payload"]["error"]
            assert error["code"] == "EXPIRED" and "did not answer" in error["message"]
            # the hung worker keeps its slot: the next request waits for another worker, and expires
            client.send_multipart([b"", MDPC01, b"svc", env.encode(env.new_request("svc", "work", {"id": 2}))])
            assert hung.next_request(timeout_s=1.5) is None
            assert reply_envelope(recv(client, 10))["payload"]["error"]["code"] == "EXPIRED"
            # its late answer reaches nobody
            hung.reply(taken[0], [env.encode(env.success_reply(request, "svc", {"late": True}))])
            assert wait_until(lambda: status(broker.frontend)["counters"]["dropped"].get("late-reply") == 1)
            assert recv(client, 0.3) is None
            reasons = wait_until(lambda: state_rows(broker.root, "SELECT reason FROM dead_letters"))
            assert sorted(reasons) == [("expired",), ("expired",)]
            assert status(broker.frontend)["pending"] == 0
        finally:
            hung.close()
            client.close()
