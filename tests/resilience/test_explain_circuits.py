"""What the command line shows of the broker's resilience: recorded circuit states and dispatch steps."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from arbiter.cli import main
from arbiter.store import database as state
from arbiter.store import decisions as record

HA_TEXT = "write a Home Assistant automation for the porch lights at sunset"


def run(project: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(main, ["--root", str(project), *args], input=input)


def test_explain_applies_a_circuit_the_broker_recorded_as_open(project: Path) -> None:
    before = json.loads(run(project, "explain", HA_TEXT, "--json", "--no-record").output)
    assert before["routingDecision"]["primaryPlugin"] == "home-assistant"
    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        record.save_circuit("home-assistant", "1.0.0", "open", "3 failure(s) within 60000 ms")
    finally:
        state.close_store()
    shown = run(project, "explain", HA_TEXT, "--no-record")
    assert "[not eligible: circuit breaker is open]" in shown.output
    assert "Circuit of home-assistant is open since" in shown.output
    after = json.loads(run(project, "explain", HA_TEXT, "--json", "--no-record").output)
    assert after["routingDecision"]["primaryPlugin"] != "home-assistant"
    assert after["circuits"]["home-assistant"]["circuit"] == "open"

    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        record.save_circuit("home-assistant", "1.0.0", "closed", "1 trial(s) succeeded")
    finally:
        state.close_store()
    again = json.loads(run(project, "explain", HA_TEXT, "--json", "--no-record").output)
    assert again["routingDecision"]["primaryPlugin"] == "home-assistant" and again["circuits"] == {}


def test_explain_request_shows_recorded_dispatch_steps(project: Path) -> None:
    decision = json.loads(run(project, "route", HA_TEXT, "--json", "--no-record").output)
    decision["outcome"] = {
        "status": "success",
        "plugin": "ahling-command-center",
        "degraded": True,
        "durationMs": 812.5,
        "steps": [
            {
                "plugin": "home-assistant",
                "command": "create-automation",
                "outcome": "timeout",
                "detail": "TIMEOUT: no answer",
                "retryInMs": 21.0,
                "attempt": 1,
                "ms": 600.2,
            },
            {
                "plugin": "ahling-command-center",
                "command": "analyze-infrastructure",
                "outcome": "success",
                "attempt": 2,
                "ms": 12.0,
            },
        ],
    }
    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        record.record_decision(decision, origin="broker")
    finally:
        state.close_store()
    shown = run(project, "explain", "--request", decision["requestId"])
    assert shown.exit_code == 0, shown.output
    assert "Dispatch (success, 812.5 ms, degraded)" in shown.output
    assert "1. home-assistant create-automation: timeout  TIMEOUT: no answer  (retry in 21.0 ms)" in shown.output
    listed = run(project, "decisions", "--last", "1")
    assert "-> home-assistant create-automation: timeout (TIMEOUT: no answer)" in listed.output
    assert run(project, "explain", "--request", "req_nothing").exit_code == 1
    assert run(project, "explain").exit_code == 2


def _record_circuit(project: Path, plugin: str, circuit: str, reason: str) -> None:
    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        record.save_circuit(plugin, "1.0.0", circuit, reason)
    finally:
        state.close_store()


def test_route_and_test_give_the_answer_explain_gives_under_a_recorded_open_circuit(project: Path) -> None:
    _record_circuit(project, "home-assistant", "open", "3 failure(s) within 60000 ms")
    explained = json.loads(run(project, "explain", HA_TEXT, "--json", "--no-record").output)
    primary = explained["routingDecision"]["primaryPlugin"]
    assert primary != "home-assistant"

    routed = json.loads(run(project, "route", HA_TEXT, "--json", "--no-record").output)
    assert routed["routingDecision"]["primaryPlugin"] == primary
    assert routed["circuits"]["home-assistant"]["circuit"] == "open"
    ha = next(s for s in routed["capabilityScores"] if s["plugin"] == "home-assistant")
    assert not ha["eligible"] and ha["reason"] == "circuit breaker is open"

    human = run(project, "route", HA_TEXT, "--no-record")
    assert human.exit_code == 0, human.output
    said = f"primary: {primary}" if primary else "no route"  # without it nothing may fit well enough
    assert said in human.output and "Circuit of home-assistant is open since" in human.output

    batch = run(project, "route", "--input", "-", "--no-record", input=json.dumps({"id": "a", "text": HA_TEXT}) + "\n")
    assert batch.exit_code == 0, batch.output
    assert json.loads(batch.stdout)["routingDecision"]["primaryPlugin"] == primary

    cases = project / "circuit.test.yaml"
    cases.write_text(f"- text: {HA_TEXT}\n  expect: home-assistant\n")
    tested = run(project, "test", str(cases), "--json")
    assert tested.exit_code == 1
    report = json.loads(tested.stdout)
    assert report["cases"][0]["got"] == primary and report["circuits"]["home-assistant"]["circuit"] == "open"
    cases.write_text(f"- text: {HA_TEXT}\n  expect: {primary or 'none'}\n")
    assert run(project, "test", str(cases)).exit_code == 0

    _record_circuit(project, "home-assistant", "closed", "1 trial(s) succeeded")
    closed = json.loads(run(project, "route", HA_TEXT, "--json", "--no-record").output)
    assert closed["routingDecision"]["primaryPlugin"] == "home-assistant" and closed["circuits"] == {}
