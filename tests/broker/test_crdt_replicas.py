"""Replicated values over a real broker: replica processes that change a PN-counter and an
OR-set at the same time end with the exact same states, holding exactly what the operations
imply; a replica that starts late catches up; a state of the wrong type is ignored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from broker_helpers import broker_with, wait_until
from crdt_replica import SHARED
from test_sdk_harness import REPO, Broker

from arbiter.sdk.replica import Replica
from arbiter.state.crdt import GCounter, LWWMap, from_json

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
NODES = ("n1", "n2", "n3")
STEPS = 200
CONVERGE_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with broker_with(tmp_path_factory.mktemp("crdt-broker")) as started:
        yield started


def expected_counter() -> int:
    """Every node: +2 per step, but -3 when j % 5 == 4 (see crdt_replica.py)."""
    return len(NODES) * sum(-3 if j % 5 == 4 else 2 for j in range(STEPS))


def expected_items() -> set[str]:
    """Each node's own elements but those it removed itself (j % 4 == 1, removed two steps
    later while there was a later step), and the shared ones: each node's last add of them came
    after its own remove, and no remove can have seen every node's last add (that would need a
    cycle in time), so add-wins keeps them."""
    own = {f"{node}/{j}" for node in NODES for j in range(STEPS) if not (j % 4 == 1 and j + 2 < STEPS)}
    return own | set(SHARED)


def read_states(out: Path) -> dict[str, dict[str, Any]]:
    states = {}
    for node in NODES:
        path = out / f"{node}.json"
        if path.exists():
            states[node] = json.loads(path.read_text())
    return states


def stop(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=EXIT_TIMEOUT_S)


def test_replica_processes_converge_to_the_exact_values(broker, tmp_path):
    out = tmp_path / "replicas"
    out.mkdir()
    command = [sys.executable, str(HERE / "crdt_replica.py"), broker.events_pub, broker.events_sub]
    processes: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        for node in NODES:
            processes.append(subprocess.Popen([*command, node, str(out), "--steps", str(STEPS)], cwd=REPO))

        def agreed() -> dict[str, dict[str, Any]] | None:
            states = read_states(out)
            texts = {json.dumps(state, sort_keys=True) for state in states.values()}
            return states if len(states) == len(NODES) and len(texts) == 1 else None

        states = wait_until(agreed, CONVERGE_TIMEOUT_S, interval=0.1)
        assert states, f"the replicas did not agree within {CONVERGE_TIMEOUT_S:g}s: {read_states(out)}"
    finally:
        (out / "stop").touch()
        for process in processes:
            stop(process)
    print(f"converged after {time.monotonic() - started:.1f}s")
    state = states[NODES[0]]
    assert from_json(state["counter"]).value() == expected_counter()
    assert set(from_json(state["items"]).value()) == expected_items()
    assert [process.returncode for process in processes] == [0] * len(NODES)


def test_late_replica_catches_up_and_ignores_a_state_of_another_type(broker):
    endpoints = {"events_pub": broker.events_pub, "events_sub": broker.events_sub, "sync_interval": 0.1}
    with Replica("late", LWWMap(), node_id="early", **endpoints) as early:
        early.update(lambda m: m.set("early", "colour", "red"))
        with (
            Replica("late", GCounter(), node_id="stray", **endpoints) as stray,
            Replica("late", LWWMap(), node_id="late", **endpoints) as late,
        ):
            stray.update(lambda c: c.increment("stray"))
            assert late.wait_for(lambda m: m.get("colour") == "red", timeout=10), late.value
            late.update(lambda m: m.set("late", "size", 3))
            assert early.wait_for(lambda m: m.value() == {"colour": "red", "size": 3}, timeout=10), early.value
            assert wait_until(lambda: early.rejected and late.rejected, timeout=10), "the stray counter was not seen"
            assert stray.value.value() == 1 and stray.merged == 0  # neither map reached the counter
    assert early.value == late.value
    with pytest.raises(RuntimeError, match="closed"):
        early.update(lambda m: m.set("early", "colour", "blue"))
