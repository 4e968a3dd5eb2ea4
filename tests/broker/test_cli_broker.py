"""The broker's command line against a running broker: events, status, request, dead letters."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Iterator

import pytest
from broker_helpers import broker_with, status, subscribed_topics, wait_until
from test_sdk_harness import WORKER_OPTIONS, Broker

from arbiter.sdk.client import Client
from arbiter.sdk.worker import Worker
from arbiter.wire import envelope as env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with broker_with(tmp_path_factory.mktemp("cli")) as running:
        yield running


def arbiter(broker: Broker, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arbiter", "--root", str(broker.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def route(broker: Broker, text: str) -> dict[str, Any]:
    request = env.new_request("arbiter.route", "route")
    request["payload"] = {"text": text}
    with Client(broker.frontend, timeout=10, retries=0) as client:
        return client.request("arbiter.route", request).envelope


def helpers_up(frontend: str) -> bool:
    """The broker's decider and state keeper have registered (each announces itself on system/health)."""
    services = status(frontend)["services"]
    return all(services.get(name, {}).get("workers") for name in ("arbiter.decide", "arbiter.keep"))


def test_events_tails_the_broker_with_wildcards(broker: Broker) -> None:
    wait_until(lambda: helpers_up(broker.frontend), what="the broker's helper processes registered")
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arbiter",
            "--root",
            str(broker.root),
            "events",
            "system/*",
            "routing/decision",
            "--count",
            "2",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # events published before its subscriptions reach the broker would never reach it
        wait_until(
            lambda: (
                tail.poll() is not None or {"system/*", "routing/decision"} <= set(subscribed_topics(broker.frontend))
            ),
            60,
            what="the broker applied the subscriptions of `arbiter events`",
        )
        worker = Worker(broker.frontend, "events-probe", **WORKER_OPTIONS)
        worker.start()  # worker-up, on system/health
        try:
            wait_until(
                lambda: status(broker.frontend)["services"].get("events-probe"), what="the probe worker registered"
            )
            route(broker, "write a poem about the sea")  # no route, still a decision
        finally:
            worker.stop(timeout=5)
        out, _ = tail.communicate(timeout=30)
    finally:
        tail.kill()
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["topic"] for e in events] == ["system/health", "routing/decision"]
    assert events[0]["event"]["payload"]["event"] == "worker-up"
    assert events[0]["event"]["payload"]["service"] == "events-probe"
    assert events[1]["event"]["payload"]["userInput"] == "write a poem about the sea"
    assert all(e["event"]["messageType"] == "event" and e["event"]["source"] == "arbiter" for e in events)


def test_status_and_request_from_the_command_line(broker: Broker) -> None:
    shown = arbiter(broker, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["endpoints"]["frontend"] == broker.frontend and data["snapshot"]["plugins"] == 7
    human = arbiter(broker, "status")
    assert "circuits: all 7 closed" in human.stdout and "dropped:" in human.stdout
    assert "decisions: written=" in human.stdout and "restarts=0" in human.stdout
    assert data["writers"]["decisions"]["restarts"] == 0 and data["writers"]["decisions"]["dropped"] == 0
    asked = arbiter(broker, "request", "mmi.service", "arbiter.route", "--raw")
    assert asked.returncode == 0 and asked.stdout.strip() == "200"
    routed = arbiter(broker, "request", "arbiter.route", '{"text": "write a poem about the sea"}')
    assert routed.returncode == 1 and json.loads(routed.stdout)["payload"]["error"]["code"] == "NO_ROUTE"
    nobody = arbiter(broker, "status", "--endpoint", "tcp://127.0.0.1:1", "--timeout", "0.3")
    assert nobody.returncode == 1 and "no broker answered" in nobody.stderr


def test_an_expired_request_is_listed_and_replayed_from_the_dead_letter_queue(broker: Broker) -> None:
    request = env.new_request("late-service", "work", {"n": 7}, timeout_ms=300)
    with Client(broker.frontend, timeout=10, retries=0) as client:
        assert client.request("late-service", request).error["code"] == "EXPIRED"

    def listed() -> list[dict[str, Any]]:
        out = arbiter(broker, "dlq", "list", "--service", "late-service", "--json")
        return [row for row in json.loads(out.stdout) if row["messageId"] == request["messageId"]]

    rows = wait_until(listed)
    assert rows and rows[0]["reason"] == "expired" and rows[0]["count"] == 1
    seen: list[dict[str, Any]] = []
    worker = Worker(broker.frontend, "late-service", **WORKER_OPTIONS)

    @worker.command("work")
    def work(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        seen.append(envelope)
        return {"doubled": parameters["n"] * 2}

    worker.start()
    try:
        replayed = arbiter(broker, "dlq", "replay", rows[0]["id"], "--json")
    finally:
        worker.stop(timeout=5)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert [e["messageId"] for e in seen] == [request["messageId"]]
    assert seen[0]["metadata"]["retryCount"] == 1 and seen[0]["payload"]["parameters"] == {"n": 7}
    shown = json.loads(arbiter(broker, "dlq", "show", rows[0]["id"], "--json").stdout)
    assert shown["replayedAt"]
