"""The agent registry learns from what plugins' workers did: success rates and times over a
window, per plugin and command; what is not the plugin's doing is not counted."""

from __future__ import annotations

import orjson
import pytest

from arbiter.routing.match import Health, health_of, step_rate
from arbiter.store import agents
from arbiter.store import database as state
from arbiter.store.decisions import actuals


def _outcome(*steps: tuple[str, str, float], phases: list | None = None, took: float = 12.3) -> str:
    data = {"status": "success", "durationMs": took, "steps": [{"plugin": "p", "command": c, "outcome": o, "ms": ms}
                                                               for c, o, ms in steps]}  # fmt: skip
    if phases is not None:
        data["phases"] = phases
    return orjson.dumps(data).decode()


def test_only_what_the_plugin_did_counts() -> None:
    found = agents.outcomes_of(
        _outcome(
            ("a", "success", 5),
            ("a", "timeout", 600),
            ("a", "rejected", 1),
            ("a", "circuit-open", 0),
            ("a", "needs-input", 0),
            ("a", "error", 7),
            ("a", "unavailable", 0),
            ("a", "cached", 0),
        )  # fmt: skip
    )
    assert [(o.ok, o.ms) for o in found] == [(True, 5), (False, 600), (False, 7), (False, 0)]
    assert agents.outcomes_of(None) == []
    step = {"what": "step", "status": "completed", "plugin": "p", "command": "c", "meta": {"ms": 9.5}}
    assert agents.step_outcome(step) == agents.Outcome("p", "c", True, 9.5)
    assert agents.step_outcome({**step, "status": "running"}) is None
    assert agents.step_outcome({**step, "what": "compensation"}) is None


def test_learning_keeps_a_window_per_plugin_and_command(store: str) -> None:
    tries = [agents.Outcome("p", "a", n % 4 != 0, float(n)) for n in range(1, 301)]  # every 4th fails
    with state.writing():
        rates = agents.learn(tries)
        agents.learn([agents.Outcome("q", "b", True, 3.0)])
    rows = {(r["plugin"], r["name"]): r for r in agents.registry()}
    command = rows[("p", "a")]
    assert (command["calls"], command["successes"], command["window"]) == (300, 225, agents.WINDOW)
    assert command["successRate"] == 0.75  # over the latest 200
    kept = [float(n) for n in range(101, 301) if n % 4 != 0]  # the window's successful tries
    assert command["p50Ms"] == kept[int(0.5 * len(kept)) - 1] and command["p95Ms"] == kept[-8]
    assert rows[("p", agents.PLUGIN_ROW)]["calls"] == 300 and rates == {"p": 0.75}
    assert agents.plugin_rates() == {"p": 0.75, "q": 1.0}


def test_actual_cost_charges_every_try_a_worker_worked_on() -> None:
    one = _outcome(("a", "success", 5))
    assert actuals(one, 0.45) == (12, 0.45)
    retried = _outcome(("a", "timeout", 600), ("a", "error", 3), ("b", "success", 5))
    assert actuals(retried, 0.3) == (12, 0.9)
    planned = _outcome(phases=[{"tries": 1}, {"tries": 2}], took=80.4)
    assert actuals(planned, 0.2) == (80, 0.3)
    assert actuals(_outcome(("a", "unavailable", 0)), 0.2) == (12, 0.0)
    assert actuals(None, None) == (None, None)


@pytest.mark.parametrize("rate,stepped", [(1.0, 1.0), (0.99, 0.95), (0.951, 0.95), (0.5, 0.5), (0.049, 0.0)])
def test_routing_sees_rates_in_steps(rate: float, stepped: float) -> None:
    assert step_rate(rate) == stepped


def test_health_names_only_what_differs_from_a_healthy_plugin() -> None:
    health = health_of({"a": "open"}, {"a": 0.97, "b": 0.42, "c": 1.0})
    assert health == {"a": Health(circuit="open", success_rate=0.95), "b": Health(success_rate=0.4)}
