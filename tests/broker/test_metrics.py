"""Prometheus /metrics of a real broker process: real workers and clients make traffic, the test
scrapes over HTTP and checks that each number moved by what the traffic did; made-up service
names add no label values; with metrics off the broker opens no port of its own for them."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq
from broker_helpers import broker_with, dealer, recv, shipped_workers, status, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_sdk_harness import Broker, free_port, make_project

from arbiter.broker.metrics import BOUNDS_MS
from arbiter.project.snapshot import build_snapshot
from arbiter.sdk.client import Client
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REFERENCE = "Build a FastAPI endpoint for orders with MongoDB and Keycloak auth for tenant acme-corp"
PLUGIN = "fastapi-backend"
OWN = {"arbiter.route", "arbiter.explain", "arbiter.status", "arbiter.chain", "arbiter.state", "arbiter.decide"}
OWN |= {"arbiter.keep", "mmi", "other"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class CliBroker(Broker):
    """A broker started with extra command-line options."""

    extra: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


@contextmanager
def metrics_broker(tmp: Path, flag_port: int, file_port: int) -> Iterator[CliBroker]:
    """A broker whose configs/broker.yaml serves metrics on ``file_port`` and whose ``--metrics``
    flag says ``flag_port``: the flag wins. Decisions on the loop (no decider to wait for)."""
    ports = [free_port() for _ in range(3)]
    frontend, pub, sub = (f"tcp://127.0.0.1:{p}" for p in ports)
    (tmp / "project").mkdir()
    (tmp / "logs").mkdir()
    overrides = {"metrics": {"address": f"127.0.0.1:{file_port}"}, "deciders": 0}
    root = make_project(tmp / "project", frontend, pub, sub, overrides)
    broker = CliBroker(root, frontend, pub, sub, tmp / "logs", extra=["--metrics", f"127.0.0.1:{flag_port}"])
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@dataclass
class Served:
    broker: CliBroker
    port: int
    file_port: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    flag_port, file_port = free_port(), free_port()
    with metrics_broker(tmp_path_factory.mktemp("metrics"), flag_port, file_port) as broker:
        with shipped_workers(broker.frontend):
            yield Served(broker, flag_port, file_port)


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def route_request(text: str, **payload: Any) -> dict[str, Any]:
    request = env.new_request("arbiter.route", "route", source="test")
    request["payload"] = {"text": text, **payload}
    return request


def state_request(source: str, **payload: Any) -> dict[str, Any]:
    request = env.new_request("arbiter.state", "state", source=source)
    request["payload"] = payload
    return request


def test_traffic_moves_the_metrics(served: Served) -> None:
    port = served.port
    before = scrape(port)
    assert value(before, "arbiter_metrics_loop_up") == 1
    with Client(served.broker.frontend, timeout=10, retries=0) as client:
        for _ in range(5):
            direct = env.new_request(PLUGIN, "scaffold-endpoint", {"resource": "orders"}, source="test")
            assert client.request(PLUGIN, direct).ok
        routed = [client.request("arbiter.route", route_request(REFERENCE, collaborate=False)) for _ in range(2)]
        assert all(r.ok and r.result["plugin"] == PLUGIN for r in routed), routed[0].envelope
        plan = client.request("arbiter.route", route_request(REFERENCE))
        assert plan.ok, plan.envelope
        unknown = client.request("arbiter.nothing", env.new_request("arbiter.nothing", "x"))
        assert unknown.error and unknown.error["code"] == "UNKNOWN_SERVICE"
        made_up = f"nobody-serves-{uuid.uuid4().hex[:8]}"
        expired = client.request(made_up, env.new_request(made_up, "x", timeout_ms=200))
        assert expired.error and expired.error["code"] == "EXPIRED"
        assert client.request("arbiter.state", state_request("test", op="put", scope="global", key="k", value=1)).ok
        lock = {"op": "lock", "resource": "metrics-test", "mode": "write", "ttlMs": 10_000}
        assert client.request("arbiter.state", state_request("holder", **lock)).ok
        waited = client.request("arbiter.state", state_request("waiter", **lock))
        assert waited.error and waited.error["code"] == "LOCKED"
    after = scrape(port)

    # direct requests: counted, answered, timed under the plugin's own service label
    assert delta(before, after, "arbiter_requests_total", service=PLUGIN) == 5
    assert delta(before, after, "arbiter_replies_total", service=PLUGIN, outcome="ok") == 5
    assert delta(before, after, "arbiter_request_duration_seconds_count", service=PLUGIN) == 5
    # routed: two plain, one plan of several phases; one decision made, the rest from the cache
    phases = plan.result["phases"]
    assert delta(before, after, "arbiter_requests_total", service="arbiter.route") == 3
    assert delta(before, after, "arbiter_replies_total", service="arbiter.route", outcome="ok") == 3
    assert delta(before, after, "arbiter_request_duration_seconds_count", service="arbiter.route") == 3
    assert delta(before, after, "arbiter_decision_duration_seconds_count") == 1
    assert delta(before, after, "arbiter_decision_cache_answers_total", result="miss") == 1
    assert delta(before, after, "arbiter_decision_cache_answers_total", result="hit") == 2
    assert delta(before, after, "arbiter_plugin_tries_total", plugin=PLUGIN, outcome="success") == 3
    assert delta(before, after, "arbiter_plugin_try_duration_seconds_count", plugin=PLUGIN) == 3
    tried = sum(delta(before, after, "arbiter_plugin_tries_total", plugin=p["plugin"], outcome="success") for p in
                {p["plugin"]: p for p in phases}.values())  # fmt: skip
    assert tried >= len(phases)
    assert delta(before, after, "arbiter_chain_runs_total", state="started") == 1
    assert delta(before, after, "arbiter_chain_runs_total", state="completed") == 1
    assert delta(before, after, "arbiter_chain_steps_total", state="completed") == len(phases)
    # refused and failed requests: a made-up name is "other", never a label of its own
    assert delta(before, after, "arbiter_replies_total", service="other", outcome="unknown-service") == 1
    assert delta(before, after, "arbiter_replies_total", service="other", outcome="expired") == 1
    assert delta(before, after, "arbiter_dead_letters_total", reason="expired") == 1
    assert delta(before, after, "arbiter_dropped_total", reason="unknown-service") == 1
    assert delta(before, after, "arbiter_dropped_total", reason="expired") == 1
    # shared state
    assert delta(before, after, "arbiter_state_operations_total", op="put", outcome="ok") == 1
    assert delta(before, after, "arbiter_state_operations_total", op="lock", outcome="ok") == 1
    assert delta(before, after, "arbiter_state_operations_total", op="lock", outcome="locked") == 1
    assert delta(before, after, "arbiter_state_lock_waits_total") == 1
    # gauges
    assert value(after, "arbiter_service_workers", service=PLUGIN) == 1
    assert value(after, "arbiter_workers") >= 7
    assert value(after, "arbiter_circuit_state", plugin=PLUGIN, state="closed") == 1
    assert value(after, "arbiter_circuit_state", plugin=PLUGIN, state="open") == 0
    assert value(after, "arbiter_uptime_seconds") > 0


def test_histograms_are_cumulative_and_match_the_status_latency(served: Served) -> None:
    with Client(served.broker.frontend, timeout=10, retries=0) as client:
        for _ in range(3):
            assert client.request(PLUGIN, env.new_request(PLUGIN, "generate-tests", {"router": "orders"})).ok
    samples = scrape(served.port)
    latency = status(served.broker.frontend)["latency"]
    assert latency["boundsMs"] == list(BOUNDS_MS)
    mine = latency["services"][PLUGIN]
    assert len(mine["counts"]) == len(BOUNDS_MS) + 1
    count = value(samples, "arbiter_request_duration_seconds_count", service=PLUGIN)
    assert sum(mine["counts"]) == count >= 3
    assert mine["sumMs"] == pytest.approx(
        value(samples, "arbiter_request_duration_seconds_sum", service=PLUGIN) * 1000, abs=0.01
    )
    running = 0
    for bound_ms, n in zip([*(f"{b / 1000!r}" for b in BOUNDS_MS), "+Inf"], mine["counts"]):
        running += n
        assert value(samples, "arbiter_request_duration_seconds_bucket", service=PLUGIN, le=bound_ms) == running
    assert set(latency["plugins"]) >= {PLUGIN} and set(latency["decisions"]) == {"counts", "sumMs"}


def test_reloads_are_counted_ok_and_refused(served: Served) -> None:
    broker = served.broker
    routing = broker.root / "configs" / "routing.yaml"
    original = routing.read_text()
    before = scrape(served.port)

    def reloaded(**labels: str) -> bool:
        os.kill(broker.process.pid, signal.SIGHUP)  # type: ignore[union-attr]
        return wait_until(lambda: delta(before, scrape(served.port), "arbiter_reloads_total", **labels) == 1, 10)

    try:
        routing.write_text(original + "\n# edited by the metrics test\n")
        assert reloaded(result="ok")
        routing.write_text(original + "\nmax_fallbacks: 99\n")
        assert reloaded(result="refused")
    finally:
        routing.write_text(original + "\n# edited by the metrics test\n")  # what is served: the refusal ends
    assert reloaded(result="restored")
    snapshots = {dict(k[1])["snapshot"] for k in scrape(served.port) if k[0] == "arbiter_build_info"}
    old = {dict(k[1])["snapshot"] for k in before if k[0] == "arbiter_build_info"}
    assert len(snapshots) == 1 and snapshots != old


def test_made_up_service_names_add_no_label_values(served: Served) -> None:
    ctx = zmq.Context()
    sock = dealer(ctx, served.broker.frontend)
    try:
        names = [f"made-up-{i}-{uuid.uuid4().hex[:6]}" for i in range(15)]
        names += [f"arbiter.made-up-{i}" for i in range(15)] + [f"mmi.made-up-{i}" for i in range(5)]
        for name in names:
            body = env.encode(env.new_request(name, "x", timeout_ms=200))
            sock.send_multipart([b"", MDPC01, name.encode(), body])
        answers = [recv(sock, 10) for _ in names]
        assert all(a is not None for a in answers)
    finally:
        sock.close()
        ctx.destroy(linger=0)
    samples = scrape(served.port)
    plugins = set(build_snapshot(REPO).plugins)
    labelled = {dict(labels).get(key) for _, labels in samples for key in ("service", "plugin")} - {None}
    assert labelled <= plugins | OWN, labelled - plugins - OWN
    assert not any("made-up" in v for _, labels in samples for _, v in labels)


def test_the_flag_overrides_the_file(served: Served) -> None:
    with pytest.raises(urllib.error.URLError):
        scrape(served.file_port)


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (Linux /proc: its socket inodes, then the tables)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_off_opens_no_port(tmp_path: Path) -> None:
    with broker_with(tmp_path, {"deciders": 0, "state_keepers": 0}) as broker:
        endpoints = {int(e.rsplit(":", 1)[1]) for e in (broker.frontend, broker.events_pub, broker.events_sub)}
        assert listening_ports(broker.process.pid) == endpoints  # type: ignore[union-attr]
        assert "latency" in status(broker.frontend)


def test_a_bad_metrics_address_is_refused_by_the_schema(tmp_path: Path) -> None:
    frontend, pub, sub = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    root = make_project(tmp_path, frontend, pub, sub, {"metrics": {"address": "127.0.0.1:99999"}})
    errors = [d.format() for d in build_snapshot(root).errors]
    assert any("metrics" in e and "65535" in e for e in errors), errors
