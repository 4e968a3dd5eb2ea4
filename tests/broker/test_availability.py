"""Routing knows who is alive: a plugin no live worker serves loses to a covered plugin that has
workers, explain through the broker says so, a request whose only fitting plugins have no worker
is answered NO_WORKER at once, and a try whose plugin loses its last worker moves on at once
instead of waiting out its timeout. Real broker and worker processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from broker_helpers import broker_with, status, wait_until
from test_faults import HA_TEXT, commands_of, processes, routed, run_load, spawn_worker, state_rows, wait_workers

from arbiter.sdk.client import Client
from arbiter.wire import envelope as env

pytestmark = pytest.mark.e2e

# Both plugins cover this request; home-assistant leads when both have workers.
SHARED_TEXT = "write a Home Assistant automation for the porch lights, and run its containers on the home lab server"


def explain(frontend: str, text: str) -> dict:
    request = env.new_request("arbiter.explain", "explain", timeout_ms=10_000)
    request["payload"] = {"text": text}
    with Client(frontend, timeout=10, retries=0) as client:
        return client.request("arbiter.explain", request).result


def gone(frontend: str, service: str) -> bool:
    return status(frontend)["services"].get(service, {}).get("workers", 0) == 0


def test_a_request_whose_plugins_have_no_worker_is_answered_no_worker_at_once(tmp_path: Path) -> None:
    with broker_with(tmp_path, {"dispatch": {"attempt_timeout_ms": 5000}}) as broker:
        explained = explain(broker.frontend, HA_TEXT)
        routing = explained["routingDecision"]
        assert routing["primaryPlugin"] is None and routing["unservedPlugins"][0] == "home-assistant", routing
        assert "home-assistant fits this request better, but no live worker serves it" in explained["explanation"]
        ha = next(s for s in explained["capabilityScores"] if s["plugin"] == "home-assistant")
        assert not ha["eligible"] and ha["reason"] == "no live worker serves it" and ha["health"]["served"] is False

        started = time.monotonic()
        ledger = run_load(broker.frontend, routed(HA_TEXT, 1), threads=1, timeout=20, retries=0)
        took = time.monotonic() - started
        reply = ledger.answers[ledger.sent[0]][0]["payload"]
        assert reply["status"] == "error" and reply["error"]["code"] == "NO_WORKER", reply
        assert "home-assistant" in reply["error"]["message"]
        assert took < 5, f"the answer waited {took:.1f}s, as long as a try's timeout"
        request_id = reply["error"]["decision"]["requestId"]
        rows = wait_until(
            lambda: state_rows(broker.root, f"select outcome from routing_decisions where request_id = '{request_id}'"),
            what="the decision row",
        )
    assert '"no-worker"' in rows[0][0]


def test_a_plugin_with_workers_leads_over_one_without(tmp_path: Path) -> None:
    with broker_with(tmp_path) as broker, processes() as running:
        running.append(
            spawn_worker(
                broker, "ahling-command-center", tmp_path / "acc.log", commands=commands_of("ahling-command-center")
            )
        )
        wait_workers(broker, "ahling-command-center", 1)
        without = explain(broker.frontend, SHARED_TEXT)["routingDecision"]
        assert without["primaryPlugin"] == "ahling-command-center" and without["unservedPlugins"] == ["home-assistant"]

        running.append(
            spawn_worker(broker, "home-assistant", tmp_path / "ha.log", commands=commands_of("home-assistant"))
        )
        wait_workers(broker, "home-assistant", 1)
        both = explain(broker.frontend, SHARED_TEXT)["routingDecision"]
        assert both["primaryPlugin"] == "home-assistant" and both["unservedPlugins"] == []

        running[-1].kill()
        wait_until(
            lambda: gone(broker.frontend, "home-assistant"), what="the broker found home-assistant's worker gone"
        )
        again = explain(broker.frontend, SHARED_TEXT)["routingDecision"]
        assert again["primaryPlugin"] == "ahling-command-center", again


def test_a_try_waiting_for_a_plugin_that_loses_its_last_worker_moves_on_at_once(tmp_path: Path) -> None:
    """The try is queued behind a hung request; when the plugin's only worker dies the try goes to
    the fallback at once, not after its attempt timeout, and is not retried on the dead plugin."""
    overrides = {"dispatch": {"attempt_timeout_ms": 20_000}}
    with broker_with(tmp_path, overrides) as broker, processes() as running:
        hung = spawn_worker(
            broker, "home-assistant", tmp_path / "ha.log", mode="hang", credit=1, commands=commands_of("home-assistant")
        )
        running.append(hung)
        running.append(
            spawn_worker(
                broker, "ahling-command-center", tmp_path / "acc.log", commands=commands_of("ahling-command-center")
            )
        )
        wait_workers(broker, "home-assistant", 1)
        wait_workers(broker, "ahling-command-center", 1)
        results: dict = {}

        def send() -> None:
            request = routed(SHARED_TEXT, 1)
            request[0][1]["payload"]["collaborate"] = False  # one try at a time, primary then fallbacks
            results["ledger"] = run_load(broker.frontend, request, threads=1, timeout=30, retries=0)

        thread = threading.Thread(target=send)
        thread.start()
        wait_until(
            lambda: status(broker.frontend)["services"]["home-assistant"]["inflight"] >= 1,
            what="the hung worker holds the try",
        )
        killed = time.monotonic()
        hung.kill()
        thread.join(30)
        answered_after = time.monotonic() - killed
    ledger = results["ledger"]
    reply = ledger.answers[ledger.sent[0]][0]["payload"]
    assert reply["status"] == "success" and reply["result"]["plugin"] == "ahling-command-center", reply
    steps = [(s["plugin"], s["outcome"], s.get("detail", "")) for s in reply["result"]["steps"]]
    assert steps[0][:2] == ("home-assistant", "unavailable") and "NO_WORKER" in steps[0][2], steps
    assert "retryInMs" not in reply["result"]["steps"][0]
    assert answered_after < 15, f"answered {answered_after:.1f}s after the worker died"
