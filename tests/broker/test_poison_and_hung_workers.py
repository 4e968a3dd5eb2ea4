"""A request that kills every worker it reaches stops after ``limits.max_deliveries`` deliveries
(dead-lettered as poison), and a direct request held by a worker that never answers expires at
its deadline instead of waiting for ever. Real broker and worker processes."""

from __future__ import annotations

import re
import time

import pytest
import zmq
from broker_helpers import (
    RawWorker,
    broker_with,
    dealer,
    recv,
    reply_envelope,
    rows_once,
    state_rows,
    status,
    wait_until,
)
from test_faults import processes, spawn_worker, wait_workers
from test_sdk_harness import HEARTBEAT_S

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
        wait_until(lambda: sum(p.poll() is not None for p in running) == 2, what="two worker processes died of it")
        rows = wait_until(
            lambda: state_rows(broker.root, "SELECT reason, service FROM dead_letters"),
            what="the poison request's dead letter was written",
        )
        assert rows == [("poison", "svc")]
        counters = status(broker.frontend)["counters"]
        assert counters["poisoned"] == 1 and counters["dead-letters-poison"] == 1
        assert status(broker.frontend)["pending"] == 0


def test_a_request_held_by_a_hung_worker_expires_at_its_deadline(tmp_path):
    with broker_with(tmp_path, {"request_timeout_ms": 800}) as broker:
        ctx = zmq.Context.instance()
        hung = RawWorker(ctx, broker.frontend, "svc", heartbeat=True)  # alive: it only never answers
        client = dealer(ctx, broker.frontend)

        def answer_to_client(timeout_s: float = 10.0) -> list[bytes] | None:
            """The client's next message, the hung worker heartbeating meanwhile (so the broker
            keeps it: what is tested is the request's deadline, not the worker's liveness)."""
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                hung.beat()
                frames = recv(client, HEARTBEAT_S / 2)
                if frames is not None:
                    return frames
            return None

        try:
            request = env.new_request("svc", "work", {"id": 1})
            client.send_multipart([b"", MDPC01, b"svc", env.encode(request)])
            taken = hung.next_request()
            assert taken is not None  # the worker holds it, and never answers
            reply = answer_to_client()
            assert reply is not None, "the client was not answered within 10 s of its 0.8 s deadline"
            error = reply_envelope(reply)["payload"]["error"]
            assert error["code"] == "EXPIRED" and "did not answer" in error["message"]
            waited = float(re.search(r"within ([0-9.]+)s", error["message"]).group(1))
            assert waited >= 0.8, f"expired before its deadline: {error['message']}"
            # the hung worker keeps its slot: the next request waits for another worker, and expires
            client.send_multipart([b"", MDPC01, b"svc", env.encode(env.new_request("svc", "work", {"id": 2}))])
            assert hung.next_request(timeout_s=1.5) is None
            assert reply_envelope(answer_to_client())["payload"]["error"]["code"] == "EXPIRED"
            assert status(broker.frontend)["services"]["svc"]["workers"] == 1, "the hung worker was dropped"
            # its late answer reaches nobody
            hung.reply(taken[0], [env.encode(env.success_reply(request, "svc", {"late": True}))])
            wait_until(
                lambda: status(broker.frontend)["counters"]["dropped"].get("late-reply") == 1,
                what="the late reply was counted and dropped",
            )
            assert recv(client, 0.3) is None
            reasons = wait_until(
                lambda: rows_once(broker.root, "SELECT reason FROM dead_letters", 2),
                what="both expired requests were dead-lettered",
            )
            assert sorted(reasons) == [("expired",), ("expired",)]
            assert status(broker.frontend)["pending"] == 0
        finally:
            hung.close()
            client.close()
