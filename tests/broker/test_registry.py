"""The agent registry learns from real dispatches: a worker that fails half its requests shows
as a 50% success rate in the store, on the decision rows' actual figures, in `arbiter agents
list`, and in the broker's own routing (the team's scores, and explain)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from broker_helpers import broker_with, state_rows, wait_until
from click.testing import CliRunner

from arbiter.cli import main
from arbiter.sdk.client import Client
from arbiter.sdk.worker import CommandError, Worker
from arbiter.wire import envelope as env

PLUGIN = "jira-orchestrator"
TEXT = "start work on PROJ-42 in jira, the login bug"


def _routed(client: Client, text: str = TEXT, service: str = "arbiter.route") -> Any:
    request = env.new_request(service, "", source="tests", timeout_ms=20_000)
    request["payload"] = {"text": text, "collaborate": False, "command": "jira:work"}
    return client.request(service, request, timeout=20, retries=0)


def test_success_rates_are_learned_from_dispatches_and_move_the_team(tmp_path: Path) -> None:
    with broker_with(tmp_path, {"deciders": 1}) as broker:
        turns = itertools.count()
        worker = Worker(broker.frontend, PLUGIN, credit=4, heartbeat_interval=0.5)

        @worker.command("jira:work")
        def work(parameters: dict, envelope: dict) -> dict:
            if next(turns) % 2:
                raise CommandError("BOOM", "the tracker said no")
            return {"issueKey": parameters["issueKey"]}

        worker.start()
        try:
            with Client(broker.frontend, timeout=20, retries=0) as client:
                wait_until(lambda: client.mmi(PLUGIN) == "200", what="the worker registered")
                replies = [_routed(client) for _ in range(8)]
                assert sum(r.ok for r in replies) == 4, [r.error for r in replies if not r.ok]

                def learned() -> dict | None:
                    rows = state_rows(broker.root, f"select metrics from agents where id = '{PLUGIN}/jira:work'")
                    metrics = json.loads(rows[0][0]) if rows else {}
                    return metrics if metrics.get("calls") == 8 else None

                metrics = wait_until(learned, what="the registry learned from eight tries")
                assert metrics["successRate"] == 0.5 and metrics["p50Ms"] is not None

                def explained() -> dict | None:
                    team = _routed(client, service="arbiter.explain").result["agentTeam"]
                    return team if team["specialists"] and team["specialists"][0]["successRate"] == 0.5 else None

                team = wait_until(explained, what="the broker's routing saw the learned rate")
                assert team["specialists"][0]["plugin"] == PLUGIN
        finally:
            worker.stop(timeout=5)
        actual = state_rows(broker.root, "select actual_duration, actual_cost, estimated_cost from routing_decisions")
        assert len(actual) >= 8 and all(d is not None and c == e for d, c, e in actual[:8] if e is not None)
        listed = CliRunner().invoke(main, ["--root", str(broker.root), "agents", "list", "--plugin", PLUGIN, "--json"])
        assert listed.exit_code == 0, listed.output
        assert {a["learned"]["successRate"] for a in json.loads(listed.stdout)} == {0.5}
        shown = CliRunner().invoke(main, ["--root", str(broker.root), "explain", TEXT])
        assert "score x0.50: jira-orchestrator's success rate over its recent tries" in shown.stdout, shown.output
