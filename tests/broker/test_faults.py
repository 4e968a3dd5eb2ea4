"""Fault injection under load, checked per request id the way a Jepsen checker does: every request
sent must come back exactly once (nothing lost, no duplicate or unexpected answers), and work that
ran twice is counted against what the delivery guarantees allow."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
import zmq
from broker_helpers import (
    RawWorker,
    broker_with,
    dealer,
    recv,
    rows_once,
    state_rows,
    status,
    subscriber,
    wait_counter,
    wait_until,
)
from test_sdk_harness import WORKER_OPTIONS, Broker

from arbiter.project.snapshot import build_snapshot
from arbiter.sdk.client import Client, RequestTimeout
from arbiter.sdk.demo_workers import plugin_worker
from arbiter.sdk.worker import Worker
from arbiter.wire import envelope as env
from arbiter.wire.mdp import DISCONNECT, MDPC01, MDPW01

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HA_TEXT = "write a Home Assistant automation for the porch lights at sunset"
RFP_TEXT = "analyze the RFP in docs/rfp-2026.pdf and list every obligation and deadline"


# -- the checker ----------------------------------------------------------------------------


@dataclass
class Ledger:
    """What was sent and what came back, per message id."""

    sent: list[str] = field(default_factory=list)
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timeouts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, message_id: str, envelope: dict[str, Any]) -> None:
        with self.lock:
            self.answers.setdefault(envelope.get("correlationId") or message_id, []).append(envelope)

    def verdict(self) -> dict[str, set[str]]:
        sent = set(self.sent)
        return {
            "lost": sent - set(self.answers),
            "duplicated": {k for k, v in self.answers.items() if len(v) > 1},
            "unexpected": set(self.answers) - sent,
        }

    def assert_clean(self) -> None:
        verdict = self.verdict()
        assert verdict == {"lost": set(), "duplicated": set(), "unexpected": set()}, (verdict, self.timeouts[:3])


def run_load(
    frontend: str,
    requests: list[tuple[str, dict[str, Any]]],
    threads: int,
    timeout: float,
    retries: int,
    on_progress: Callable[[int], None] | None = None,
) -> Ledger:
    """Send ``(service, envelope)`` pairs from several client threads, each waiting for its reply."""
    ledger = Ledger(sent=[e["messageId"] for _, e in requests])
    work: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    for item in requests:
        work.put(item)
    done = Counter()

    def client_loop() -> None:
        with Client(frontend, timeout=timeout, retries=retries) as client:
            while True:
                try:
                    service, request = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    reply = client.request(service, request)
                    ledger.answer(request["messageId"], reply.envelope or {})
                except RequestTimeout as exc:
                    ledger.timeouts.append(str(exc))
                with ledger.lock:
                    done["n"] += 1
                    count = done["n"]
                if on_progress:
                    on_progress(count)

    pool = [threading.Thread(target=client_loop, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(300)
    return ledger


def direct(service: str, n: int, timeout_ms: int = 60_000) -> list[tuple[str, dict[str, Any]]]:
    return [(service, env.new_request(service, "work", {"id": i}, timeout_ms=timeout_ms)) for i in range(n)]


def routed(text: str, n: int, command: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _ in range(n):
        request = env.new_request("arbiter.route", "route", timeout_ms=30_000)
        request["payload"] = {"text": text, **({"command": command} if command else {})}
        out.append(("arbiter.route", request))
    return out


def execution_lines(*logs: Path) -> list[tuple[str, int]]:
    """(messageId, metadata.retryCount) for every time a worker ran a request."""
    lines = []
    for log in logs:
        if log.exists():
            lines += [(i, int(n)) for i, n in (line.split() for line in log.read_text().splitlines() if line)]
    return lines


def executions(*logs: Path) -> Counter[str]:
    return Counter(message_id for message_id, _ in execution_lines(*logs))


# -- processes ------------------------------------------------------------------------------


def spawn_worker(
    broker: Broker,
    service: str,
    log: Path,
    mode: str = "ok",
    credit: int = 4,
    commands: str = "work",
    delay: float = 0.05,
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "fault_worker.py"),
            broker.frontend,
            service,
            str(log),
            "--mode",
            mode,
            "--credit",
            str(credit),
            "--commands",
            commands,
            "--delay",
            str(delay),
        ],
        cwd=REPO,
    )


def wait_workers(broker: Broker, service: str, count: int) -> None:
    assert wait_until(lambda: status(broker.frontend)["services"].get(service, {}).get("workers", 0) >= count), (
        f"{service} never had {count} worker(s)"
    )


@contextmanager
def processes() -> Iterator[list[subprocess.Popen]]:
    running: list[subprocess.Popen] = []
    try:
        yield running
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@contextmanager
def healthy_plugins(broker: Broker, skip: set[str]) -> Iterator[list[Worker]]:
    """In-process demo workers for every shipped plugin not in ``skip``."""
    snapshot = build_snapshot(REPO)
    running = [
        plugin_worker(p, broker.frontend, delay=0.0, credit=8, **WORKER_OPTIONS)
        for name, p in snapshot.plugins.items()
        if name not in skip
    ]
    for worker in running:
        worker.start()
    for worker in running:
        wait_workers(broker, worker.service, 1)
    try:
        yield running
    finally:
        for worker in running:
            worker.stop(timeout=5)


def commands_of(plugin: str) -> str:
    return ",".join(c.name for c in build_snapshot(REPO).plugins[plugin].commands)


def fast_policies(
    *plugins: str, threshold: int = 2, open_ms: int = 60_000, retries: int = 1, attempt_ms: int = 600
) -> tuple[dict[str, Any], Callable[[Path], None]]:
    """Config overrides and project changes that make retries and breakers act within a test's patience."""

    def project(root: Path) -> None:
        for name in plugins:
            path = root / "plugins" / name / ".claude-plugin" / "plugin.json"
            manifest = json.loads(path.read_text())
            handling = manifest["errorHandling"]
            handling["circuitBreaker"] = {
                "enabled": True,
                "threshold": threshold,
                "timeout": open_ms,
                "halfOpenRetries": 1,
                "monitoringWindow": 60_000,
            }
            handling["retryPolicy"] = {
                "maxRetries": retries,
                "backoff": "exponential",
                "initialDelay": 20,
                "maxDelay": 50,
                "jitter": 0.2,
                "retryableErrors": [],
            }
            path.write_text(json.dumps(manifest, indent=2))

    return {"dispatch": {"attempt_timeout_ms": attempt_ms}}, project


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


# -- the faults -----------------------------------------------------------------------------


def test_a_sigkilled_worker_loses_nothing(tmp_path: Path) -> None:
    with broker_with(tmp_path) as broker, processes() as running:
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        victim = spawn_worker(broker, "jobs", logs[0])
        running += [victim, spawn_worker(broker, "jobs", logs[1])]
        wait_workers(broker, "jobs", 2)

        def kill_midway(count: int) -> None:
            if count == 80 and victim.poll() is None:
                victim.send_signal(signal.SIGKILL)

        ledger = run_load(
            broker.frontend, direct("jobs", 300), threads=6, timeout=15, retries=1, on_progress=kill_midway
        )
        info = status(broker.frontend)
    ledger.assert_clean()
    ran = executions(*logs)
    assert set(ran) == set(ledger.sent)
    twice = {k for k, n in ran.items() if n > 1}
    assert len(twice) <= 4, "only what the killed worker held (its credit) may run twice"
    counters = info["counters"]
    assert counters.get("workers-expired", 0) + counters.get("workers-unreachable", 0) >= 1
    assert info["services"]["jobs"]["workers"] == 1


def test_a_worker_that_disconnects_and_reconnects_loses_nothing(tmp_path: Path, ctx: zmq.Context) -> None:
    with broker_with(tmp_path) as broker:
        first = RawWorker(ctx, broker.frontend, "flaky", credit=3)
        client = dealer(ctx, broker.frontend)
        requests = [env.new_request("flaky", "work", {"id": i}) for i in range(6)]
        for request in requests:
            client.send_multipart([b"", MDPC01, b"flaky", orjson.dumps(request)])
        held = [first.next_request() for _ in range(3)]
        assert all(held)
        first.sock.send_multipart([b"", MDPW01, DISCONNECT])  # leaves holding three requests
        first.close()
        second = RawWorker(ctx, broker.frontend, "flaky", credit=3)
        seen: list[str] = []
        while len(seen) < 6:
            got = second.next_request(10)
            assert got is not None, f"only {len(seen)} of 6 requests reached the new connection"
            address, body = got
            data = orjson.loads(body[0])
            seen.append(data["messageId"])
            second.reply(address, [orjson.dumps(env.success_reply(data, "flaky", "ok"))])
        answered = set()
        while len(answered) < 6:
            frames = recv(client, 10)
            assert frames is not None
            answered.add(orjson.loads(frames[3])["correlationId"])
        assert answered == {r["messageId"] for r in requests} == set(seen)
        second.close()
        client.close()


def test_broker_restart_while_clients_retry(tmp_path: Path) -> None:
    with broker_with(tmp_path) as broker, processes() as running:
        log = tmp_path / "w.log"
        running.append(spawn_worker(broker, "steady", log, delay=0.02))
        wait_workers(broker, "steady", 1)

        def restart_midway(count: int) -> None:
            if count == 60:
                broker.kill()
                time.sleep(0.5)  # the fault under test: half a second with no broker, while clients retry
                broker.start()

        ledger = run_load(
            broker.frontend, direct("steady", 200), threads=4, timeout=1.0, retries=10, on_progress=restart_midway
        )
        assert broker.starts == 2
    ledger.assert_clean()
    ran = executions(log)
    assert set(ran) == set(ledger.sent)
    assert not {k for k, n in ran.items() if n > 1}, "the SDK worker answers retried ids from its cache"


def test_a_hung_primary_times_out_falls_back_and_opens_its_circuit(tmp_path: Path, ctx: zmq.Context) -> None:
    overrides, project = fast_policies("home-assistant", threshold=2, open_ms=4000)
    with broker_with(tmp_path, overrides, project) as broker, processes() as running:
        hung = spawn_worker(
            broker, "home-assistant", tmp_path / "ha.log", mode="hang", commands=commands_of("home-assistant")
        )
        running.append(hung)
        wait_workers(broker, "home-assistant", 1)
        events = subscriber(ctx, broker, "plugin/home-assistant/circuit-breaker")
        with healthy_plugins(broker, skip={"home-assistant"}):
            ledger = run_load(broker.frontend, routed(HA_TEXT, 6), threads=1, timeout=20, retries=0)
            ledger.assert_clean()
            replies = [ledger.answers[i][0]["payload"] for i in ledger.sent]
            assert replies[0]["status"] == "success", replies[0]
            # once the circuit is open, the request goes elsewhere, or (nothing else fitting well
            # enough) is answered NO_ROUTE with the decision: never to the open circuit's plugin
            assert all(r["status"] == "success" or r["error"]["code"] == "NO_ROUTE" for r in replies), replies
            first = replies[0]["result"]
            assert first["degraded"] and first["plugin"] != "home-assistant"
            outcomes = [(s["plugin"], s["outcome"]) for s in first["steps"]]
            assert outcomes[:2] == [("home-assistant", "timeout"), ("home-assistant", "timeout")]
            assert outcomes[-1] == (first["plugin"], "success")
            # with the circuit open the matcher stops choosing the plugin at all
            later = replies[-1].get("result") or replies[-1]["error"]
            assert later["decision"]["routingDecision"]["primaryPlugin"] != "home-assistant"
            event = recv(events)
            assert event is not None and orjson.loads(event[1])["payload"]["state"] == "open"
            assert status(broker.frontend)["circuits"]["home-assistant"]["state"] == "open"
            with Client(broker.frontend, timeout=10, retries=0) as client:
                request = routed(HA_TEXT, 1)[0][1]
                explained = client.request("arbiter.explain", request).result
            ha = next(s for s in explained["capabilityScores"] if s["plugin"] == "home-assistant")
            assert not ha["eligible"] and "circuit" in ha["reason"]
            assert explained["circuits"] == {"home-assistant": "open"}
            shown = subprocess.run(
                [sys.executable, "-m", "arbiter", "--root", str(broker.root), "status"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            # open, or half-open once the open period ran out
            lines = [line.split() for line in shown.stdout.splitlines()]
            states = [words[2] for words in lines if words[:2] == ["circuit", "home-assistant:"]]
            assert states in (["OPEN"], ["HALF-OPEN"]), shown.stdout
            cli = subprocess.run(
                [sys.executable, "-m", "arbiter", "--root", str(broker.root), "explain", HA_TEXT],
                capture_output=True,
                text=True,
                timeout=60,
            )
            # the CLI reads the state the broker recorded (open, or half-open once the open period ran out)
            assert "Circuit of home-assistant is " in cli.stdout, cli.stdout

            # the plugin recovers: after the open period one trial goes through and closes it
            hung.kill()
            joined = status(broker.frontend)["counters"]["workers-joined"]
            running.append(
                spawn_worker(broker, "home-assistant", tmp_path / "ha2.log", commands=commands_of("home-assistant"))
            )
            assert wait_counter(broker.frontend, "workers-joined", joined), "the new home-assistant worker never joined"
            half_open = recv(events, 10)
            assert half_open is not None and orjson.loads(half_open[1])["payload"]["state"] == "half-open"
            recovered = run_load(broker.frontend, routed(HA_TEXT, 1), threads=1, timeout=20, retries=0)
            reply = recovered.answers[recovered.sent[0]][0]["payload"]["result"]
            assert reply["plugin"] == "home-assistant" and not reply["degraded"]
            closed = recv(events, 10)
            assert closed is not None and orjson.loads(closed[1])["payload"]["state"] == "closed"
            wait_until(
                lambda: status(broker.frontend)["counters"].get("circuit-closed", 0) >= 1,
                what="the broker counted the circuit closing",
            )
        events.close()
    first_id = replies[0]["result"]["decision"]["requestId"]
    recorded = subprocess.run(
        [sys.executable, "-m", "arbiter", "--root", str(broker.root), "explain", "--request", first_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Dispatch (success" in recorded.stdout and "degraded" in recorded.stdout, recorded.stdout
    assert "1. home-assistant create-automation: timeout" in recorded.stdout
    cli = subprocess.run(
        [sys.executable, "-m", "arbiter", "--root", str(broker.root), "decisions", "--last", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "-> home-assistant" in cli.stdout and ": timeout" in cli.stdout


def test_error_replies_are_retried_then_fallen_back_and_recorded(tmp_path: Path) -> None:
    overrides, project = fast_policies("home-assistant", threshold=1000, retries=2)
    with broker_with(tmp_path, overrides, project) as broker, processes() as running:
        running.append(
            spawn_worker(
                broker, "home-assistant", tmp_path / "ha.log", mode="error", commands=commands_of("home-assistant")
            )
        )
        wait_workers(broker, "home-assistant", 1)
        with healthy_plugins(broker, skip={"home-assistant"}):
            ledger = run_load(broker.frontend, routed(HA_TEXT, 20), threads=4, timeout=20, retries=0)
        query = "select outcome from routing_decisions where origin='broker'"
        rows = wait_until(lambda: rows_once(broker.root, query, 20), what="the 20 decision rows were written")
    ledger.assert_clean()
    for message_id in ledger.sent:
        result = ledger.answers[message_id][0]["payload"]["result"]
        steps = [(s["plugin"], s["outcome"]) for s in result["steps"]]
        assert steps[:3] == [("home-assistant", "error")] * 3, steps
        # the first fallback's command needs a directory the text does not state: passed over
        assert steps[3] == ("ahling-command-center", "needs-input"), steps
        assert steps[-1] == ("exec-automator", "success") and result["degraded"]
    ran = executions(tmp_path / "ha.log")
    assert all(n == 3 for n in ran.values()) and len(ran) == 20, "each try ran: errors are not answered from cache"
    tries: dict[str, list[int]] = {}
    for message_id, retry_count in execution_lines(tmp_path / "ha.log"):
        tries.setdefault(message_id, []).append(retry_count)
    assert all(sorted(counts) == [0, 1, 2] for counts in tries.values()), "metadata.retryCount counts the tries"
    outcomes = [json.loads(r[0]) for r in rows]
    assert len(outcomes) == 20 and all(o["degraded"] and len(o["steps"]) == 5 for o in outcomes)


def test_cached_result_then_dead_letter_when_everything_fails(tmp_path: Path) -> None:
    plugins = (
        "exec-automator",
        "jira-orchestrator",
        "lobbi-platform-manager",
        "ahling-command-center",
        "fastapi-backend",
        "frontend-powerhouse",
        "home-assistant",
    )
    overrides, project = fast_policies(*plugins, threshold=100, retries=1)
    with broker_with(tmp_path, overrides, project) as broker, processes() as running:
        good = spawn_worker(broker, "exec-automator", tmp_path / "ok.log", commands=commands_of("exec-automator"))
        running.append(good)
        wait_workers(broker, "exec-automator", 1)
        first = run_load(broker.frontend, routed(RFP_TEXT, 1, "analyze-document"), threads=1, timeout=20, retries=0)
        good.kill()
        good.wait(10)
        gone = lambda: status(broker.frontend)["services"].get("exec-automator", {}).get("workers", 0) == 0  # noqa: E731
        wait_until(gone, what="the broker forgot the killed worker")  # a routed request waits for no worker
        running.append(
            spawn_worker(
                broker, "exec-automator", tmp_path / "bad.log", mode="error", commands=commands_of("exec-automator")
            )
        )
        wait_workers(broker, "exec-automator", 1)
        cached = run_load(broker.frontend, routed(RFP_TEXT, 1, "analyze-document"), threads=1, timeout=20, retries=0)
        report = routed(RFP_TEXT + " for the Q3 2026 board", 1, "draft-board-report")  # states its period
        lost = run_load(broker.frontend, report, threads=1, timeout=20, retries=0)
        dead = f"select reason from dead_letters where message_id = '{lost.sent[0]}'"
        letters = wait_until(lambda: state_rows(broker.root, dead), what="the lost request's dead letter was written")
        info = status(broker.frontend)
    fresh = first.answers[first.sent[0]][0]["payload"]["result"]
    served = cached.answers[cached.sent[0]][0]["payload"]
    assert served["status"] == "success" and served["result"]["fromCache"] and served["result"]["degraded"]
    assert served["result"]["result"] == fresh["result"]
    assert served["result"]["steps"][-1]["outcome"] == "cached"
    failed = lost.answers[lost.sent[0]][0]["payload"]
    assert failed["status"] == "error" and failed["error"]["code"] == "EXHAUSTED"
    assert letters == [("exhausted",)], (
        info["writers"],
        info["counters"],
        state_rows(broker.root, "select message_id, reason from dead_letters"),
        lost.sent,
    )
