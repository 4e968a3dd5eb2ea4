"""One bad field costs one request at most: envelopes with a field replaced by a value of another
JSON type, sent to every own service, to a served plugin (routed, with errors and fallbacks), to a
direct service, to a service nobody serves (expiry) and over the size limit. After each, the
broker still answers, holds no request, and in the end stops on SIGTERM within its grace period.
A real broker process; the workers are raw MDP sockets in threads of this test."""

from __future__ import annotations

import copy
import hashlib
import signal
import threading
import time
from typing import Any, Iterator

import orjson
import pytest
import zmq
from broker_helpers import broker_with, dealer, recv, status, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbiter.broker.shutdown import GRACE_S
from arbiter.wire import envelope as env
from arbiter.wire.mdp import HEARTBEAT, MDPC01, MDPW01, READY, REPLY, REQUEST

pytestmark = pytest.mark.e2e

ROUTED_TEXT = "Build a FastAPI endpoint for orders with MongoDB and Keycloak auth for tenant acme-corp"
MAX_BYTES = 32_768
OVERRIDES = {
    "request_timeout_ms": 800,
    "dispatch": {"attempt_timeout_ms": 300},
    "limits": {"max_message_bytes": MAX_BYTES},
}
FIELDS = (
    "messageId",
    "correlationId",
    "timestamp",
    "source",
    "destination",
    "topic",
    "messageType",
    "priority",
    "headers",
    "headers.traceId",
    "payload",
    "metadata",
    "metadata.retryCount",
    "metadata.timeout",
    "metadata.expiresAt",
    "payload.text",
    "payload.files",
    "payload.command",
    "payload.parameters",
    "payload.context",
    "payload.from",
)
TARGETS = ("arbiter.status", "arbiter.explain", "arbiter.route", "echo", "nobody", "too-large")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=5,
)


class ThreadWorker:
    """A raw MDP worker with heartbeats: ``echo`` answers every request with its body; a plugin
    answers an envelope with an error or a success, by the hash of the body (so both the fallback
    and the success path run), and anything else with its body."""

    def __init__(self, endpoint: str, service: str):
        self.endpoint, self.service = endpoint, service
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        sock = dealer(zmq.Context.instance(), self.endpoint)
        sock.send_multipart([b"", MDPW01, READY, self.service.encode(), b"10"])
        beat = time.monotonic()
        try:
            while not self.stop.is_set():
                if sock.poll(100):
                    frames = sock.recv_multipart()
                    if len(frames) >= 6 and frames[2] == REQUEST:
                        sock.send_multipart([b"", MDPW01, REPLY, frames[3], b"", *self.answer(frames[5:])])
                if time.monotonic() - beat > 0.3:
                    sock.send_multipart([b"", MDPW01, HEARTBEAT])
                    beat = time.monotonic()
        finally:
            sock.close()

    def answer(self, body: list[bytes]) -> list[bytes]:
        request = env.as_envelope(body[0]) if len(body) == 1 and self.service != "echo" else None
        if request is None:
            return body
        if hashlib.sha256(body[0]).digest()[0] % 2:
            return [orjson.dumps(env.error_reply(request, self.service, "UPSTREAM", "injected"))]
        return [orjson.dumps(env.success_reply(request, self.service, {"ok": True}))]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory) -> Iterator[Any]:
    with broker_with(tmp_path_factory.mktemp("fuzz"), OVERRIDES) as broker:
        workers = [ThreadWorker(broker.frontend, "echo"), ThreadWorker(broker.frontend, "fastapi-backend")]
        wait_until(lambda: status(broker.frontend)["workers"] == 2, what="both workers registered")
        try:
            yield broker
        finally:
            for worker in workers:
                worker.close()


def base_envelope(target: str) -> dict[str, Any]:
    envelope = env.new_request(target, "work", {"id": 1}, timeout_ms=5000)
    envelope["payload"]["text"] = ROUTED_TEXT
    envelope["payload"]["files"] = ["src/api/users.py"]
    return envelope


def replace(envelope: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(envelope)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    return out


def ask(frontend: str, service: str, body: bytes, timeout_s: float = 10.0) -> list[bytes]:
    sock = dealer(zmq.Context.instance(), frontend)
    try:
        sock.send_multipart([b"", MDPC01, service.encode(), body])
        reply = recv(sock, timeout_s)
        assert reply is not None, f"no answer from {service} within {timeout_s}s"
        assert reply[:3] == [b"", MDPC01, service.encode()], reply[:3]
        return reply[3:]
    finally:
        sock.close()


def settled(frontend: str) -> bool:
    now = status(frontend)
    return now["pending"] == 0 and now["routedInFlight"] == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(TARGETS), field=st.sampled_from(FIELDS), value=json_values)
def test_one_bad_field_costs_one_request_at_most(fuzz, target, field, value):
    body = orjson.dumps(replace(base_envelope(target), field, value))
    service = target
    if target == "too-large":
        service, body = "echo", body[:-1] + b', "pad": "' + b"x" * MAX_BYTES + b'"}'
    answer = ask(fuzz.frontend, service, body)
    assert len(answer) == 1
    if service != "echo" or target == "too-large":
        reply = orjson.loads(answer[0])  # every answer of the broker is an envelope
        assert reply["payload"]["status"] in ("success", "error"), reply
    wait_until(lambda: settled(fuzz.frontend), timeout=15, what="the broker holding no request again")
    assert ask(fuzz.frontend, "echo", b"ping") == [b"ping"]
    assert fuzz.process.poll() is None


def test_a_bad_field_is_named_in_the_error(fuzz):
    body = orjson.dumps(replace(base_envelope("arbiter.route"), "metadata", ["not", "an", "object"]))
    error = orjson.loads(ask(fuzz.frontend, "arbiter.route", body)[0])["payload"]["error"]
    assert error["code"] == "BAD_ENVELOPE" and error["message"].startswith("metadata: must be an object")
    body = orjson.dumps(replace(base_envelope("arbiter.route"), "payload.context", [1, 2]))
    error = orjson.loads(ask(fuzz.frontend, "arbiter.route", body)[0])["payload"]["error"]
    assert error["code"] == "BAD_REQUEST" and "payload.context" in error["message"]
    counters = status(fuzz.frontend)["counters"]
    assert counters["dropped"].get("bad-envelope", 0) >= 1 and counters["dropped"].get("bad-request", 0) >= 1


def test_sigterm_stops_within_the_grace_period_with_bad_envelopes_in_flight(tmp_path):
    with broker_with(tmp_path, {**OVERRIDES, "request_timeout_ms": 60_000}) as broker:
        clients = []
        for index, field in enumerate(FIELDS):
            target = ("nobody", "arbiter.route")[index % 2]
            sock = dealer(zmq.Context.instance(), broker.frontend)
            sock.send_multipart(
                [b"", MDPC01, target.encode(), orjson.dumps(replace(base_envelope(target), field, "x"))]
            )
            clients.append(sock)
        wait_until(lambda: status(broker.frontend)["pending"] >= 1, what="requests waiting")
        started = time.monotonic()
        broker.process.send_signal(signal.SIGTERM)
        broker.process.wait(GRACE_S + 10)
        assert time.monotonic() - started < GRACE_S + 5
        for sock in clients:
            assert recv(sock, 1) is not None, "a request was left without an answer"
            sock.close()
