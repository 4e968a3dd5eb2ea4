"""OpenTelemetry export of the broker's spans (arbiter/telemetry/otel.py): the broker runs in this
process, its loop on a thread, with real sockets on 127.0.0.1 and real SDK workers; the spans go
to the SDK's in-memory exporter. A routed request that is retried and falls back, and a chain,
must make one tree in the client's trace: the request's span under the client's span, each try
under it, each chain step under the chain's span, each step's try under its step."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from test_sdk_harness import free_port, make_project
from test_tracing import CLIENT_PARENT, HA_TEXT, PLUGIN, TRACE_ID, Recording, _served, project, workers

from arbiter.broker.daemon import build_broker, close_broker
from arbiter.sdk.client import Client
from arbiter.telemetry import otel
from arbiter.wire import envelope as env

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

pytestmark = pytest.mark.e2e


class Running:
    """The fields a test reads of a broker run in this process."""

    def __init__(self, root: Path, frontend: str) -> None:
        self.root, self.frontend = root, frontend


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[tuple[Running, InMemorySpanExporter]]:
    ports = [free_port() for _ in range(3)]
    frontend, pub, sub = (f"tcp://127.0.0.1:{p}" for p in ports)
    (tmp_path / "project").mkdir()
    root = make_project(tmp_path / "project", frontend, pub, sub, {"deciders": 0, "state_keepers": 0})
    project(root)
    broker, reloader = build_broker(root)
    exporter = InMemorySpanExporter()
    broker.telemetry = otel.for_exporter(exporter)
    loop = threading.Thread(target=broker.run, name="broker-loop", daemon=True)
    loop.start()
    try:
        yield Running(root, frontend), exporter
    finally:
        broker.stop()
        loop.join(timeout=20)
        close_broker(broker, reloader)


def test_spans_join_the_callers_trace(in_process: tuple[Running, InMemorySpanExporter]) -> None:
    running, exporter = in_process
    with workers(running, Recording()):  # type: ignore[arg-type]
        _served(running, "home-assistant", "ahling-command-center", PLUGIN)  # type: ignore[arg-type]
        with Client(running.frontend, timeout=30, retries=0) as client:
            route = env.new_request("arbiter.route", "route", headers={"traceparent": CLIENT_PARENT})
            route["payload"] = {"text": HA_TEXT, "collaborate": False, "parameters": {"directory": "/srv/ha"}}
            assert client.request("arbiter.route", route).ok
            chain = env.new_request("arbiter.chain", "chain", headers={"traceparent": CLIENT_PARENT})
            chain["payload"] = {"chain": "test-sequence", "params": {"value": "v"}}
            assert client.request("arbiter.chain", chain).result["status"] == "completed"
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    assert spans and all(f"{s.context.trace_id:032x}" == TRACE_ID for s in spans.values())
    client_span = int(CLIENT_PARENT[36:52], 16)
    (routed,) = [s for s in spans.values() if s.name == "arbiter.route"]
    assert routed.parent.span_id == client_span and routed.parent.is_remote
    assert routed.attributes["arbiter.plugin"] == "ahling-command-center"
    assert routed.attributes["arbiter.status"] == "success"
    tries = _children(spans, routed, "arbiter.try")
    assert [(t.attributes["arbiter.plugin"], t.attributes["arbiter.outcome"]) for t in tries] == [
        ("home-assistant", "error"),
        ("home-assistant", "error"),
        ("ahling-command-center", "success"),
    ]
    assert [t.attributes["arbiter.try"] for t in tries] == [1, 2, 3]
    assert all(t.start_time >= routed.start_time and t.end_time <= routed.end_time for t in tries)
    (run,) = [s for s in spans.values() if s.name == "arbiter.chain"]
    assert run.parent.span_id == client_span
    steps = _children(spans, run, "arbiter.chain.step")
    assert [s.attributes["arbiter.step"] for s in steps] == ["one", "two", "three", "four", "five"]
    for step in steps:
        (only,) = _children(spans, step, "arbiter.try")
        assert only.attributes["arbiter.outcome"] == "success"


def _children(spans: dict[int, Any], parent: Any, name: str) -> list[Any]:
    found = [s for s in spans.values() if s.name == name and s.parent and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: s.start_time)


def test_export_is_off_unless_asked() -> None:
    assert otel.from_environment(False, {}) is None
    assert otel.from_environment(True, {"OTEL_TRACES_EXPORTER": "none"}) is None
    spans = otel.from_environment(True, {})  # --otel alone: the console
    assert spans is not None
    spans.shutdown()
