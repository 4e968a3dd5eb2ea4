"""W3C trace context end to end, and the broker's JSON logs: a real broker process (logging JSON
lines), real SDK workers that write down the headers of every request they receive, a routed
request that is retried and falls back, and a chain.

What a caller sees: each try a worker receives carries the caller's trace-id with a parent-id of
its own, ``tracestate`` unchanged; every step of a chain is in the caller's trace; the decision's
event, its row (``arbiter decisions --json``, ``arbiter explain --request``) and the run
(``arbiter chain status``) carry the trace id; the JSON log holds no request text at info level.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import zmq
from broker_helpers import quick_retries, subscriber, wait_until
from click.testing import CliRunner
from test_chain_faults import COMMANDS, PLUGIN, add_chains
from test_sdk_harness import WORKER_OPTIONS, Broker, launch_broker

from arbiter.cli import main as cli_main
from arbiter.sdk.client import Client
from arbiter.sdk.worker import CommandError, Worker
from arbiter.wire import envelope as env
from arbiter.wire import trace

pytestmark = pytest.mark.e2e

HA_TEXT = "write a Home Assistant automation for the porch lights at sunset"
MARKER = "porch-lights-marker-7c1f"  # a text no log line at info level may hold
CLIENT_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = CLIENT_PARENT[3:35]
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


class JsonBroker(Broker):
    """The broker process logging JSON lines."""

    def command(self) -> list[str]:
        return [*super().command(), "--log-format", "json"]


def project(root: Path) -> None:
    """home-assistant retried once on any error, then its fallback; the chain test plugin."""
    breaker = {"enabled": False, "threshold": 1000, "timeout": 1000, "halfOpenRetries": 1}
    quick_retries(root, "home-assistant", [], breaker)
    add_chains(root)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from launch_broker(tmp_path_factory.mktemp("tracing"), {"deciders": 0}, project, JsonBroker)


class Recording:
    """Headers of every request the workers received, by service."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def add(self, service: str, envelope: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append((service, dict(envelope.get("headers") or {})))

    def of(self, service: str, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [h for s, h in self.seen if s == service and h.get("traceId") == trace_id]


@contextmanager
def workers(broker: Broker, recording: Recording) -> Iterator[None]:
    """home-assistant always fails; ahling-command-center and the chain steps succeed."""
    made = []
    for service, fails in (("home-assistant", True), ("ahling-command-center", False), (PLUGIN, False)):
        worker = Worker(broker.frontend, service, **WORKER_OPTIONS)

        def handle(parameters: dict, envelope: dict, service: str = service, fails: bool = fails) -> Any:
            recording.add(service, envelope)
            if fails:
                raise CommandError("DEVICE_OFFLINE", "the hub is offline")
            return {"value": parameters.get("value", "ok"), "id": "x"}

        names = COMMANDS if service == PLUGIN else _commands(broker, service)
        for name in names:
            worker.command(name)(handle)
        worker.start()
        made.append(worker)
    try:
        yield
    finally:
        for worker in made:
            worker.stop(timeout=5)


def _commands(broker: Broker, plugin: str) -> list[str]:
    folder = broker.root / "plugins" / plugin / "commands"
    return [path.stem for path in folder.glob("*.md")]


def _served(broker: Broker, *services: str) -> None:
    with Client(broker.frontend, timeout=2, retries=3) as client:
        for service in services:
            wait_until(lambda s=service: client.has_service(s), what=f"a worker of {service}")


def test_tries_fallbacks_and_chain_steps_stay_in_the_callers_trace(broker: JsonBroker) -> None:
    recording = Recording()
    ctx = zmq.Context()
    try:
        events = subscriber(ctx, broker, "routing/decision", "orchestration/task-complete")
        with workers(broker, recording):
            _served(broker, "home-assistant", "ahling-command-center", PLUGIN)
            routed = _routed(broker)
            _chain(broker, recording)
            _events(events)
        tries = recording.of("home-assistant", TRACE_ID) + recording.of("ahling-command-center", TRACE_ID)
        assert len(tries) >= 3, recording.seen  # the first try, its retry, the fallback
        parents = [trace.parse_traceparent(h["traceparent"]) for h in tries]
        assert all(p is not None and p.trace_id == TRACE_ID and p.flags == 1 for p in parents)
        ids = [p.parent_id for p in parents]
        assert len(set(ids)) == len(ids) and CLIENT_PARENT[36:52] not in ids  # a span of its own per try
        assert all(h["tracestate"] == STATE and h["spanId"] == p.parent_id for h, p in zip(tries, parents))
        _recorded(broker, routed)
    finally:
        ctx.destroy(linger=0)
    _logs_hold_no_request_text(broker)


def _routed(broker: Broker) -> str:
    request = env.new_request("arbiter.route", "route", headers={"traceparent": CLIENT_PARENT, "tracestate": STATE})
    request["payload"] = {"text": f"{HA_TEXT} ({MARKER})", "collaborate": False, "parameters": {"directory": "/srv/ha"}}
    with Client(broker.frontend, timeout=20, retries=0) as client:
        reply = client.request("arbiter.route", request)
    assert reply.ok, reply.payload
    result = reply.result
    assert result["degraded"] and result["plugin"] == "ahling-command-center", result
    outcomes = [(s["plugin"], s["outcome"]) for s in result["steps"]]
    assert outcomes[:2] == [("home-assistant", "error"), ("home-assistant", "error")], outcomes
    assert reply.envelope["headers"]["traceId"] == TRACE_ID
    return result["decision"]["requestId"]


def _chain(broker: Broker, recording: Recording) -> None:
    request = env.new_request("arbiter.chain", "chain", headers={"traceparent": CLIENT_PARENT, "tracestate": STATE})
    request["payload"] = {"chain": "test-sequence", "params": {"value": "v"}}
    with Client(broker.frontend, timeout=30, retries=0) as client:
        run = client.request("arbiter.chain", request).result
    assert run["status"] == "completed", run
    steps = recording.of(PLUGIN, TRACE_ID)
    assert len(steps) == 5, recording.seen
    parents = [trace.parse_traceparent(h["traceparent"]) for h in steps]
    assert len({p.parent_id for p in parents}) == 5 and all(h["tracestate"] == STATE for h in steps)
    status = CliRunner().invoke(cli_main, ["--root", str(broker.root), "chain", "status", run["runId"], "--json"])
    assert TRACE_ID in status.output, status.output


def _events(events: zmq.Socket) -> None:
    seen: dict[str, Any] = {}
    while len(seen) < 2 and events.poll(5000):
        _topic, body = events.recv_multipart()[:2]
        data = orjson.loads(body)
        payload = data.get("payload", data)
        seen[str(_topic.decode())] = payload
    decision = next(v for k, v in seen.items() if k.startswith("routing/decision"))
    done = next(v for k, v in seen.items() if k.startswith("orchestration/task-complete"))
    assert decision["traceId"] == TRACE_ID and done["traceId"] == TRACE_ID


def _recorded(broker: Broker, request_id: str) -> None:
    def listed() -> dict | None:
        out = CliRunner().invoke(cli_main, ["--root", str(broker.root), "decisions", "--json", "--last", "50"])
        rows = orjson.loads(out.output) if out.exit_code == 0 else []
        return next((r for r in rows if r["requestId"] == request_id), None)

    row = wait_until(listed, what="the decision's row")
    assert row["traceId"] == TRACE_ID
    explained = CliRunner().invoke(cli_main, ["--root", str(broker.root), "explain", "--request", request_id])
    assert f"Trace: {TRACE_ID}" in explained.output, explained.output


def _logs_hold_no_request_text(broker: Broker) -> None:
    lines = [line for line in broker.log_tail(10_000).splitlines() if line.startswith("{")]
    records = [orjson.loads(line) for line in lines]
    assert records and all({"time", "level", "event", "logger"} <= set(r) for r in records)
    assert all(r["time"].endswith("Z") for r in records)
    failed = [r for r in records if r["event"].startswith("try ")]
    assert failed and all(r["traceId"] == TRACE_ID and r["plugin"] == "home-assistant" for r in failed)
    assert not [r for r in records if MARKER in json.dumps(r)]
