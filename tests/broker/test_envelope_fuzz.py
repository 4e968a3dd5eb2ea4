"""One bad field costs one request at most: envelopes with a field replaced by a value of another
JSON type, sent to every own service (arbiter.chain and arbiter.state among them, with a state
keeper), to a served plugin (routed, with errors and fallbacks), to a plugin whose worker never
answers (routed, and a chain's step: tries time out, are retried, the request expires), to a direct
service, to a service nobody serves (expiry) and over the size limit. After each, the broker still
answers, holds no request and runs no chain; and with such requests in flight, held by a worker
and queued, it stops on SIGTERM within its grace period, every client answered once. A real
broker process; the workers are raw MDP sockets in threads of this test, and a worker process
that hangs (fault_worker.py)."""

from __future__ import annotations

import copy
import hashlib
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import zmq
from broker_helpers import broker_with, dealer, quick_retries, recv, status, wait_for_log, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_faults import HA_TEXT, commands_of, processes, spawn_worker
from test_sdk_harness import Broker

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
    "state_keepers": 1,  # arbiter.state is served
}
HANGS = "home-assistant"  # its worker takes every request and never answers
PLAN = ("fastapi-backend", "lobbi-platform-manager")  # ROUTED_TEXT's collaboration plan: both served
CHAINS = """\
# The chains the envelope fuzz tests run (tests/broker/test_envelope_fuzz.py).

# Two steps at a plugin that fails now and then; a failure undoes the steps done, in reverse order.
chain fuzz-saga saga (resource: string = "orders") timeout 20s {
  step endpoint: fastapi-backend scaffold-endpoint with resource = $resource compensate generate-tests with router = $resource
  step socket: fastapi-backend add-websocket with path = "/ws" compensate add-background-task with operation = "close"
}

# One step at a plugin whose worker never answers: it times out, is tried again, and the run fails.
chain fuzz-hang sequential (description: string = "porch lights at sunset") timeout 3s {
  step automate: home-assistant create-automation with description = $description timeout 300ms retry 1
}
"""
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
    "payload.collaborate",
    "payload.chain",
    "payload.params",
    "payload.wait",
    "payload.resume",
    "payload.cancel",
    "payload.op",
    "payload.scope",
    "payload.key",
    "payload.value",
    "payload.version",
    "payload.by",
    "payload.ttlMs",
    "payload.fence",
    "payload.resource",
    "payload.since",
    "payload.limit",
    "headers.spanId",
    "headers.traceparent",
    "headers.x-tenant",
)
# What each target sends: the service, and the payload of a good request to it.
TARGET_PAYLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "arbiter.status": ("arbiter.status", {}),
    "arbiter.explain": ("arbiter.explain", {"text": ROUTED_TEXT, "files": ["src/api/users.py"]}),
    "arbiter.route": ("arbiter.route", {"text": ROUTED_TEXT, "files": ["src/api/users.py"], "collaborate": True}),
    "routed-to-a-hung-worker": ("arbiter.route", {"text": HA_TEXT, "command": "create-automation"}),
    "arbiter.chain": ("arbiter.chain", {"chain": "fuzz-saga", "params": {"resource": "orders"}, "wait": True}),
    "chain-at-a-hung-worker": ("arbiter.chain", {"chain": "fuzz-hang", "params": {}, "wait": True}),
    "state-put": (
        "arbiter.state",
        {"op": "put", "scope": "session:fuzz", "key": "k", "value": {"n": 1}, "access": "public", "ttlMs": 60_000},
    ),
    "state-incr": ("arbiter.state", {"op": "incr", "scope": "session:fuzz", "key": "count", "by": 1}),
    "state-lock": ("arbiter.state", {"op": "lock", "resource": "fuzz", "mode": "read", "ttlMs": 500}),
    "state-log": ("arbiter.state", {"op": "log", "since": 0, "topic": "state/session:fuzz/**", "limit": 5}),
    "echo": ("echo", {"text": ROUTED_TEXT, "command": "work", "parameters": {"id": 1}}),
    "nobody": ("nobody", {"text": ROUTED_TEXT, "command": "work", "parameters": {"id": 1}}),
    "too-large": ("echo", {"text": ROUTED_TEXT, "command": "work", "parameters": {"id": 1}}),
}
TARGETS = tuple(TARGET_PAYLOADS)
json_values = st.recursive(
    # every integer JSON carries here (orjson reads -2**63 to 2**64 - 1), floats, text
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=12),
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


def fuzz_project(root: Path) -> None:
    """The fuzz chains, and a plugin that hangs tried again soon and never shut off by its circuit
    breaker (so its tries keep timing out), falling back to a plugin nobody serves."""
    (root / "rules" / "zz-fuzz-chains.arb").write_text(CHAINS)
    quick_retries(root, HANGS, ["timeout", "unavailable"])


@contextmanager
def fuzz_broker(tmp: Path, overrides: dict[str, Any]) -> Iterator[Broker]:
    """A broker on the fuzz project with its workers: echo, and in threads the two plugins of the
    routed request's collaboration plan; a worker process of HANGS that never answers; the state
    keeper."""
    with broker_with(tmp, overrides, fuzz_project) as broker, processes() as running:
        workers = [ThreadWorker(broker.frontend, name) for name in ("echo", *PLAN)]
        commands = f"{commands_of(HANGS)},work"
        running.append(spawn_worker(broker, HANGS, tmp / "hang.log", mode="hang", credit=64, commands=commands))
        serving = ("echo", *PLAN, HANGS, "arbiter.keep")  # arbiter.keep: the state keeper

        def ready() -> bool:
            services = status(broker.frontend)["services"]
            return all(services.get(name, {}).get("workers") for name in serving)

        try:
            wait_until(ready, what=f"workers of {', '.join(serving)} registered")
            yield broker
        finally:
            for worker in workers:
                worker.close()


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory) -> Iterator[Broker]:
    with fuzz_broker(tmp_path_factory.mktemp("fuzz"), OVERRIDES) as broker:
        yield broker


def base_envelope(target: str) -> tuple[str, dict[str, Any]]:
    """The service ``target`` sends to, and a good request to it."""
    service, payload = TARGET_PAYLOADS[target]
    envelope = env.new_request(service, "work", timeout_ms=5000)
    envelope["payload"] = copy.deepcopy(payload)
    return service, envelope


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
    return now["pending"] == 0 and now["routedInFlight"] == 0 and now["chainRuns"] == 0


def body_of(target: str, envelope: dict[str, Any]) -> bytes:
    body = orjson.dumps(envelope)
    return body[:-1] + b', "pad": "' + b"x" * MAX_BYTES + b'"}' if target == "too-large" else body


def bad_request(target: str, field: str, value: Any) -> tuple[str, bytes]:
    """The service and body of a request to ``target`` whose ``field`` holds ``value``."""
    service, envelope = base_envelope(target)
    return service, body_of(target, replace(envelope, field, value))


def test_the_good_requests_of_every_target_are_answered_as_they_should(fuzz):
    """What the fuzzing starts from: each target's request, unchanged, is answered as it should
    be; the hung plugin's tries time out, and what follows them ends within the expiry."""
    for target in TARGETS:
        service, envelope = base_envelope(target)
        reply = orjson.loads(ask(fuzz.frontend, service, body_of(target, envelope))[0])
        payload = reply["payload"]
        if target == "echo":
            assert reply["messageId"] == envelope["messageId"]  # the worker echoed the request
        elif target in ("too-large", "nobody"):
            assert payload["error"]["code"] == {"too-large": "TOO_LARGE", "nobody": "EXPIRED"}[target]
        elif target == "routed-to-a-hung-worker":
            assert payload["error"]["code"] in ("EXHAUSTED", "EXPIRED"), payload
            steps = [(step["plugin"], step["outcome"]) for step in payload["error"]["steps"]]
            assert steps[:2] == [(HANGS, "timeout"), (HANGS, "timeout")], steps  # tried, tried again
            # then a fallback, if the expiry leaves time for one, which ends at once or is cut short
            assert all(plugin != HANGS for plugin, _outcome in steps[2:]), steps
        elif target == "chain-at-a-hung-worker":
            assert payload["result"]["status"] == "failed" and payload["result"]["steps"][0]["tries"] == 2, payload
        elif target == "arbiter.chain":
            # its worker fails a request now and then (by its hash), a compensation too
            assert payload["result"]["status"] in ("completed", "compensated", "failed", "compensation-failed"), payload
        elif target == "arbiter.route":  # a plan of two phases, whose workers fail a request now and then
            # (by its hash), which may open a circuit: then a phase fails, or no served plugin is left to fit
            codes = ("COLLABORATION_FAILED", "EXHAUSTED", "NO_WORKER")
            assert payload["status"] == "success" or payload["error"]["code"] in codes, payload
            if payload["status"] == "success":
                assert [phase["plugin"] for phase in payload["result"]["phases"]] == list(PLAN)
        else:
            assert payload["status"] == "success", (target, payload)
        wait_until(lambda: settled(fuzz.frontend), timeout=15, what=f"the broker settled after {target}")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(TARGETS), field=st.sampled_from(FIELDS), value=json_values)
def test_one_bad_field_costs_one_request_at_most(fuzz, target, field, value):
    service, body = bad_request(target, field, value)
    answer = ask(fuzz.frontend, service, body)
    assert len(answer) == 1
    if service != "echo" or target == "too-large":
        reply = orjson.loads(answer[0])  # every answer of the broker is an envelope
        assert reply["payload"]["status"] in ("success", "error"), reply
        error = reply["payload"].get("error") or {}
        assert error.get("code") != "INTERNAL_ERROR", error  # a bad field is the client's error, not the broker's
    wait_until(lambda: settled(fuzz.frontend), timeout=15, what="the broker holding no request again")
    assert ask(fuzz.frontend, "echo", b"ping") == [b"ping"]
    assert fuzz.process.poll() is None


def test_a_bad_field_is_named_in_the_error(fuzz):
    body = orjson.dumps(replace(base_envelope("arbiter.route")[1], "metadata", ["not", "an", "object"]))
    error = orjson.loads(ask(fuzz.frontend, "arbiter.route", body)[0])["payload"]["error"]
    assert error["code"] == "BAD_ENVELOPE" and error["message"].startswith("metadata: must be an object")
    body = orjson.dumps(replace(base_envelope("arbiter.route")[1], "payload.context", [1, 2]))
    error = orjson.loads(ask(fuzz.frontend, "arbiter.route", body)[0])["payload"]["error"]
    assert error["code"] == "BAD_REQUEST" and "payload.context" in error["message"]
    counters = status(fuzz.frontend)["counters"]
    assert counters["dropped"].get("bad-envelope", 0) >= 1 and counters["dropped"].get("bad-request", 0) >= 1


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bad=st.lists(
        st.tuples(st.sampled_from(TARGETS), st.sampled_from(FIELDS), json_values, st.booleans()), min_size=2, max_size=6
    )
)
def test_sigterm_stops_within_the_grace_period_with_bad_envelopes_in_flight(tmp_path_factory, bad):
    """With a request held by the worker that hangs, one queued for a service nobody serves, and
    bad envelopes to any target sent before SIGTERM or while the broker stops, it stops within its
    grace period, and every client has exactly one answer. (Each example waits out the grace
    period: the held request keeps the broker reading until its end.)"""
    patient = {**OVERRIDES, "request_timeout_ms": 60_000, "dispatch": {"attempt_timeout_ms": 60_000}, "deciders": 0}
    with fuzz_broker(tmp_path_factory.mktemp("stop"), patient) as broker:
        ctx = zmq.Context.instance()
        clients: list[tuple[zmq.Socket, bytes]] = []

        def send(service: str, body: bytes) -> None:
            clients.append((dealer(ctx, broker.frontend), service.encode()))
            clients[-1][0].send_multipart([b"", MDPC01, service.encode(), body])

        held = env.new_request(HANGS, "create-automation", {"description": "porch"}, timeout_ms=60_000)
        send(HANGS, orjson.dumps(held))
        send("nobody", orjson.dumps(env.new_request("nobody", "work", timeout_ms=60_000)))
        hang_log = broker.root.parent / "hang.log"
        wait_until(lambda: hang_log.exists() and held["messageId"] in hang_log.read_text(), what="the request held")
        queued = lambda: status(broker.frontend)["services"].get("nobody", {}).get("queued") == 1  # noqa: E731
        wait_until(queued, what="the request queued")
        for target, field, value, while_stopping in bad:
            if not while_stopping:
                send(*bad_request(target, field, value))
        started = time.monotonic()
        broker.process.send_signal(signal.SIGTERM)
        wait_for_log(broker, "stopping:")
        for target, field, value, while_stopping in bad:
            if while_stopping:
                send(*bad_request(target, field, value))
        broker.process.wait(GRACE_S + 10)
        stopped = time.monotonic() - started
        answers = []
        for sock, service in clients:
            first = recv(sock, 2)
            assert first is not None and first[:3] == [b"", MDPC01, service], "a request was left without an answer"
            assert not sock.poll(100), "a request was answered twice"
            answers.append(first[3:])
            sock.close()
    assert stopped < GRACE_S + 3, f"the broker took {stopped:.1f}s to stop"
    for body in answers[:2]:
        assert orjson.loads(body[0])["payload"]["error"]["code"] == "SHUTTING_DOWN"
