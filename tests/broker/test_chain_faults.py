"""Chain runs under faults, with real processes: a broker, SDK workers (chain_worker.py) and the
store. Each step is counted from the workers' side (one log line per completed execution, keyed by
the step's messageId ``<runId>:<step>``), so every test checks the same two things the way a Jepsen
checker does, and then the run's end as the broker and the store tell it:

- nothing lost: every step the run completed was executed;
- nothing done twice: executed exactly once (and a step the run never reached, not at all).

The project is a copy of the shipped one plus a plugin of its own, ``steps``, whose commands do
nothing but write down that they ran, and rules/zz-test-chains.arb with the chains run here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import zmq
from broker_helpers import broker_with, state_rows, status, subscriber, wait_until
from click.testing import CliRunner
from test_sdk_harness import Broker

from arbiter.cli import main as cli_main
from arbiter.sdk.client import Client
from arbiter.wire import envelope as env

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGIN = "steps"
COMMANDS = (
    "one",
    "two",
    "three",
    "four",
    "five",
    "create",
    "configure",
    "deploy",
    "announce",
    "delete",
    "unconfigure",
    "undeploy",
    "retract",
)
ENDED = ("completed", "failed", "cancelled", "timed-out", "compensated", "compensation-failed")

CHAINS = """\
# The chains the chain fault tests run (tests/broker/test_chain_faults.py).

# Four steps, each undone in reverse order when a later one fails.
chain test-saga saga (tenant: string = "acme") timeout 60s {
  step create: steps create with value = $tenant compensate delete with id = create.id
  step configure: steps configure with value = create.id compensate unconfigure with id = configure.id
  step deploy: steps deploy with value = configure.id compensate undeploy with id = deploy.id
  step announce: steps announce with value = deploy.id compensate retract with id = announce.id
}

# Five steps one after another, each given the one before's value.
chain test-sequence sequential (value: string = "v") timeout 2m {
  step one: steps one with value = $value
  step two: steps two with value = one.value
  step three: steps three with value = two.value
  step four: steps four with value = three.value
  step five: steps five with value = four.value
}

# Three steps at once, bounded as a whole.
chain test-fanout parallel timeout 1500ms {
  step fast-a: steps one with value = "a"
  step fast-b: steps two with value = "b"
  step slow: steps three with value = "c" timeout 20s
}

# The same five steps, each tried again while its plugin has no worker (as after a restart).
chain test-patient sequential (value: string = "v") timeout 2m {
  step one: steps one with value = $value retry 12
  step two: steps two with value = one.value retry 12
  step three: steps three with value = two.value retry 12
  step four: steps four with value = three.value retry 12
  step five: steps five with value = four.value retry 12
}

# A parameter picks the branch.
chain test-branch sequential (path: string = "left") timeout 60s {
  step first: steps one with value = $path
  if $path == "left" {
    step left-a: steps two with value = "l"
    step left-b: steps three with value = "l"
  } else {
    step right-a: steps four with value = "r"
    step right-b: steps five with value = "r"
  }
  step last: steps announce with value = first.value
}
"""

MANIFEST = {
    "name": PLUGIN,
    "version": "1.0.0",
    "apiVersion": "v1",
    "description": "Test steps for chain runs: each command only writes down that it ran.",
    "keywords": ["steps"],
    "capabilities": {"domains": [], "contexts": [], "patterns": [], "integrations": []},
    "routing": {"priority": 1, "keywords": ["chain test step"], "acceptsRoutingFrom": [], "canRouteTo": []},
    "errorHandling": {
        # failures are what these tests inject: they must not open the circuit for the next run
        "circuitBreaker": {"enabled": False, "threshold": 1000, "timeout": 1000, "halfOpenRetries": 1},
        "retryPolicy": {"maxRetries": 0, "backoff": "linear", "initialDelay": 50, "maxDelay": 500, "jitter": 0.1},
        "fallback": {"strategy": "graceful-degradation", "fallbackPlugins": []},
    },
}


def add_chains(root: Path) -> None:
    """The plugin ``steps`` (a manifest and one markdown file per command) and the test chains."""
    plugin = root / "plugins" / PLUGIN
    (plugin / ".claude-plugin").mkdir(parents=True)
    (plugin / ".claude-plugin" / "plugin.json").write_text(json.dumps(MANIFEST, indent=2))
    (plugin / "commands").mkdir()
    for name in COMMANDS:
        (plugin / "commands" / f"{name}.md").write_text(
            f"---\nname: {name}\ndescription: Chain test step {name}.\ntags:\n- test\n---\n\n# /{name}\n\nStep {name}.\n"
        )
    (root / "rules" / "zz-test-chains.arb").write_text(CHAINS)


OVERRIDES = {"deciders": 0}  # chains route nothing by text: no decider processes to start


@contextmanager
def chain_broker(tmp: Path) -> Iterator[Broker]:
    with broker_with(tmp, OVERRIDES, add_chains) as broker:
        yield broker


# -- workers and what they did --------------------------------------------------------------


@dataclass
class Workers:
    """The chain_worker.py processes of one test; every one is killed at the end."""

    broker: Broker
    folder: Path
    running: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    traces: list[Path] = field(default_factory=list)

    def spawn(self, *options: str, credit: int = 4) -> subprocess.Popen:
        n = len(self.running)
        log, trace = self.folder / f"worker-{n}.log", self.folder / f"worker-{n}.trace"
        command = [sys.executable, str(HERE / "chain_worker.py"), self.broker.frontend, PLUGIN, str(log)]
        command += ["--commands", ",".join(COMMANDS), "--credit", str(credit), "--trace", str(trace), *options]
        process = subprocess.Popen(command, cwd=REPO)
        self.running.append(process)
        self.logs.append(log)
        self.traces.append(trace)
        return process

    def executions(self) -> list[tuple[str, str, str, int]]:
        """(messageId, command, ok|error, pid) of every completed execution, in each log's order."""
        lines = []
        for log in self.logs:
            if log.exists():
                for line in log.read_text().splitlines():
                    key, command, outcome, pid = line.split()
                    lines.append((key, command, outcome, int(pid)))
        return lines

    def counts(self, outcome: str | None = None) -> Counter[str]:
        return Counter(key for key, _, out, _ in self.executions() if outcome is None or out == outcome)

    def trace(self, index: int) -> list[list[str]]:
        path = self.traces[index]
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def holder(self, key: str) -> int | None:
        """Which worker started the handler of ``key``, if one did."""
        for index in range(len(self.traces)):
            if any(words[:2] == ["begin", key] for words in self.trace(index)):
                return index
        return None

    def received(self, key: str) -> int:
        """How many times ``key`` reached a worker, duplicates answered from the cache included."""
        return sum(words == ["recv", key] for index in range(len(self.traces)) for words in self.trace(index))

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@contextmanager
def workers(broker: Broker, tmp: Path) -> Iterator[Workers]:
    pool = Workers(broker, tmp)
    try:
        yield pool
    finally:
        pool.stop_all()


def workers_of(broker: Broker) -> int:
    return status(broker.frontend)["services"].get(PLUGIN, {}).get("workers", 0)


def wait_workers(broker: Broker, count: int) -> None:
    wait_until(lambda: workers_of(broker) == count, 20, what=f"{count} worker(s) of {PLUGIN} registered")


# -- runs -----------------------------------------------------------------------------------


def chain_request(payload: dict[str, Any], timeout_ms: int = 60_000) -> dict[str, Any]:
    request = env.new_request("arbiter.chain", "chain", timeout_ms=timeout_ms)
    request["payload"] = payload
    return request


def run_chain(broker: Broker, chain: str, params: dict[str, Any] | None = None, wait: bool = True) -> dict[str, Any]:
    """``arbiter.chain``: the run when it ended (``wait``), or as it started."""
    with Client(broker.frontend, timeout=60, retries=0) as client:
        reply = client.request("arbiter.chain", chain_request({"chain": chain, "params": params or {}, "wait": wait}))
    assert reply.ok, reply.error
    return reply.result


def stored_run(broker: Broker, run_id: str) -> tuple[str, dict[str, str]] | None:
    """The run's status and its steps' (by key: ``name`` or ``name/undo``) as the store holds them."""
    runs = state_rows(broker.root, f"select status from tasks where id = '{run_id}'")
    if not runs:
        return None
    steps = state_rows(broker.root, f"select id, status from tasks where parent_task_id = '{run_id}'")
    return runs[0][0], {step_id.split("/", 1)[1]: step_status for step_id, step_status in steps}


def stored_end(broker: Broker, run_id: str, timeout: float = 30.0) -> tuple[str, dict[str, str]]:
    """The run as stored once it ended (the recorder writes a batch at a time)."""
    return wait_until(
        lambda: (found := stored_run(broker, run_id)) is not None and found[0] in ENDED and found,
        timeout,
        what=f"the store holds run {run_id} ended",
    )


def cli(broker: Broker, *args: str) -> Any:
    """The ``arbiter`` command line on the broker's project, as an operator runs it."""
    return CliRunner().invoke(cli_main, ["--root", str(broker.root), *args])


def cli_json(broker: Broker, *args: str) -> Any:
    result = cli(broker, *args, "--json")
    assert result.stdout, result.output
    return json.loads(result.stdout)


def keys(run_id: str, *steps: str) -> set[str]:
    return {f"{run_id}:{step}" for step in steps}


def assert_once(
    pool: Workers, run_id: str, done: tuple[str, ...], never: tuple[str, ...], failed: tuple[str, ...] = ()
) -> None:
    """Zero lost, zero twice: each step (or compensation) of ``done`` executed exactly once, each of
    ``never`` not at all, and nothing of the run ran but these and the steps that ``failed``."""
    mine = {key: n for key, n in pool.counts().items() if key.startswith(f"{run_id}:")}
    verdict = {
        "lost": keys(run_id, *done) - set(mine),
        "twice": {key for key in keys(run_id, *done) if mine.get(key, 0) > 1},
        "never reached, yet ran": keys(run_id, *never) & set(mine),
        "unexpected": set(mine) - keys(run_id, *done, *failed, *never),
    }
    assert verdict == dict.fromkeys(verdict, set()), (verdict, pool.executions())


def steps_of(run: dict[str, Any]) -> dict[str, str]:
    """A run's steps as ``arbiter.chain`` or ``arbiter chain status --json`` shows them, by key."""
    return {s["name"] + ("/undo" if s["what"] == "compensation" else ""): s["status"] for s in run["steps"]}


SEQUENCE = ("one", "two", "three", "four", "five")


# -- a saga ---------------------------------------------------------------------------------


def test_a_saga_whose_third_step_fails_compensates_the_two_before_in_reverse_once_each(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        pool.spawn("--fail", "deploy")
        wait_workers(broker, 1)
        run = run_chain(broker, "test-saga")
        run_id = run["runId"]
        assert run["status"] == "compensated", run
        assert steps_of(run) == {
            "create": "completed",
            "configure": "completed",
            "deploy": "failed",
            "configure/undo": "compensated",
            "create/undo": "compensated",
        }
        assert run["error"].startswith("step deploy failed: "), run["error"]
        assert stored_end(broker, run_id) == ("compensated", steps_of(run))
    assert_once(pool, run_id, ("create", "configure", "configure/undo", "create/undo"), ("announce",), ("deploy",))
    ran = [(key.split(":", 1)[1], outcome) for key, _, outcome, _ in pool.executions()]
    assert ran == [
        ("create", "ok"),
        ("configure", "ok"),
        ("deploy", "error"),  # `retry 0`: the failed step is tried once
        ("configure/undo", "ok"),
        ("create/undo", "ok"),
    ]


def test_a_compensation_that_keeps_failing_ends_compensation_failed_with_a_dead_letter(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        pool.spawn("--fail", "deploy,unconfigure")
        wait_workers(broker, 1)
        run = run_chain(broker, "test-saga")
        run_id = run["runId"]
        assert run["status"] == "compensation-failed", run
        assert steps_of(run) == {
            "create": "completed",
            "configure": "completed",
            "deploy": "failed",
            "configure/undo": "compensation-failed",
            "create/undo": "compensated",  # the failed compensation does not stop the ones before it
        }
        assert stored_end(broker, run_id) == ("compensation-failed", steps_of(run))
        undo = f"{run_id}:configure/undo"
        wait_until(
            lambda: state_rows(broker.root, f"select id from dead_letters where message_id = '{undo}'"),
            what="the failed compensation's dead letter was written",
        )
        letters = cli_json(broker, "dlq", "list", "--reason", "compensation-failed")
    assert_once(pool, run_id, ("create", "configure", "create/undo"), ("announce",), ("deploy", "configure/undo"))
    assert pool.counts("error")[undo] == 3, "a compensation is tried three times, each try runs again"
    assert pool.counts("ok")[undo] == 0
    (letter,) = letters
    assert (letter["service"], letter["reason"], letter["messageId"]) == ("arbiter.chain", "compensation-failed", undo)
    assert "compensation unconfigure of step configure failed" in letter["detail"]


# -- a parallel group past its time ----------------------------------------------------------


def test_a_parallel_group_past_its_timeout_ends_timed_out_and_abandons_the_hung_step(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        pool.spawn("--hang", "three")
        wait_workers(broker, 1)
        started = time.monotonic()
        run = run_chain(broker, "test-fanout")
        took = time.monotonic() - started
        run_id = run["runId"]
        assert run["status"] == "timed-out", run
        assert "did not finish within 1500 ms" in run["error"]
        assert 1.4 < took < 10, took
        assert steps_of(run) == {"fast-a": "completed", "fast-b": "completed", "slow": "cancelled"}
        assert run["results"]["fast-a"]["value"] == "a" and run["results"]["fast-b"]["value"] == "b"
        assert stored_end(broker, run_id) == ("timed-out", steps_of(run))
        assert pool.holder(f"{run_id}:slow") == 0, "the hung step had reached the worker"
    assert_once(pool, run_id, ("fast-a", "fast-b"), ("slow",))


# -- a conditional chain ---------------------------------------------------------------------


@pytest.mark.parametrize(("path", "taken", "not_taken"), [("left", "left", "right"), ("right", "right", "left")])
def test_a_conditional_chain_runs_only_the_branch_its_parameter_picks(
    tmp_path: Path, path: str, taken: str, not_taken: str
) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        pool.spawn()
        wait_workers(broker, 1)
        run = run_chain(broker, "test-branch", {"path": path})
        run_id = run["runId"]
        assert run["status"] == "completed", run
        branch = (f"{taken}-a", f"{taken}-b")
        assert steps_of(run) == dict.fromkeys(("first", *branch, "last"), "completed")
        assert run["result"]["value"] == path
        assert stored_end(broker, run_id) == ("completed", steps_of(run))
    assert_once(pool, run_id, ("first", *branch, "last"), (f"{not_taken}-a", f"{not_taken}-b"))
    assert [key.split(":", 1)[1] for key, *_ in pool.executions()] == ["first", *branch, "last"]


# -- a worker killed mid-step ----------------------------------------------------------------


def test_a_worker_killed_mid_step_loses_nothing_the_other_worker_runs_the_step(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        for _ in range(2):
            pool.spawn("--sleep", "three=1.5")
        wait_workers(broker, 2)
        run_id = run_chain(broker, "test-sequence", {"value": "k"}, wait=False)["runId"]
        step = f"{run_id}:three"
        wait_until(lambda: pool.holder(step) is not None, 20, interval=0.02, what=f"a worker started {step}")
        victim = pool.holder(step)
        pool.running[victim].send_signal(signal.SIGKILL)
        pool.running[victim].wait(10)
        ended, steps = stored_end(broker, run_id)
        survivor = 1 - victim
        assert ended == "completed", steps
        assert steps == dict.fromkeys(SEQUENCE, "completed")
        shown = cli_json(broker, "chain", "status", run_id)
        assert shown["status"] == "completed" and shown["resumed"] == 0
        info = status(broker.frontend)
    assert_once(pool, run_id, SEQUENCE, ())
    assert not pool.logs[victim].exists() or step not in pool.logs[victim].read_text(), "killed mid-step"
    (by,) = [pid for key, _, _, pid in pool.executions() if key == step]
    assert by == pool.running[survivor].pid, "the step was delivered to the other worker"
    assert pool.received(step) >= 2, "the step reached both workers"
    assert info["counters"].get("redelivered", 0) >= 1
    assert info["services"][PLUGIN]["workers"] == 1


# -- the broker killed mid-chain -------------------------------------------------------------


def kill_broker_mid_chain(broker: Broker, pool: Workers, chain: str) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    """Start ``chain`` and SIGKILL the broker while step three runs on the worker (and the store
    says so); the worker keeps running and finishes the step, its answer lost with the broker. Then
    start the broker again on the same project and store. Returns the run's id, its end and steps
    as stored, and ``arbiter chain status RUN_ID --json``."""
    pool.spawn("--sleep", "three=2")
    wait_workers(broker, 1)
    run_id = run_chain(broker, chain, {"value": "r"}, wait=False)["runId"]
    step = f"{run_id}:three"
    wait_until(lambda: pool.holder(step) == 0, 20, interval=0.02, what=f"the worker started {step}")
    wait_until(
        lambda: (found := stored_run(broker, run_id)) and found[1].get("three") == "running",
        what="the store holds step three running",
    )
    broker.kill()
    wait_until(lambda: pool.counts("ok")[step] == 1, 20, what=f"the worker finished {step} after the broker died")
    broker.start()  # same project, same store, same ports
    assert f"resuming run {run_id} of {chain}" in broker_log(broker)
    ended, steps = stored_end(broker, run_id)
    return run_id, ended, steps, cli_json(broker, "chain", "status", run_id)


def broker_log(broker: Broker) -> str:
    return (broker.log_dir / f"broker-{broker.starts}.log").read_text(errors="replace")


def test_a_broker_killed_mid_chain_resumes_the_run_and_the_step_in_flight_runs_once(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        run_id, ended, steps, shown = kill_broker_mid_chain(broker, pool, "test-sequence")
        assert shown["resumed"] >= 1, shown
        assert (ended, steps) == ("completed", dict.fromkeys(SEQUENCE, "completed")), shown
    assert_once(pool, run_id, SEQUENCE, ())
    assert pool.received(f"{run_id}:three") >= 2, "the step in flight was sent again with its key"


def test_a_broker_killed_mid_chain_resumes_a_run_whose_steps_retry_and_the_step_in_flight_runs_once(
    tmp_path: Path,
) -> None:
    """The same with steps that are tried again while their plugin has no worker: the run goes
    on, and the step in flight, sent again with its key, is answered from the worker's cache."""
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        run_id, ended, steps, shown = kill_broker_mid_chain(broker, pool, "test-patient")
        assert shown["resumed"] >= 1, shown
        assert (ended, steps) == ("completed", dict.fromkeys(SEQUENCE, "completed")), shown
        assert shown["status"] == "completed"
    assert_once(pool, run_id, SEQUENCE, ())
    step = f"{run_id}:three"
    assert pool.received(step) == 2, "the step in flight was sent again with its key, and answered from the cache"
    assert [words[1] for words in pool.trace(0) if words[0] == "begin"].count(step) == 1


def test_a_broker_killed_mid_compensation_goes_on_compensating(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        pool.spawn("--fail", "deploy", "--sleep", "unconfigure=2")
        wait_workers(broker, 1)
        run_id = run_chain(broker, "test-saga", wait=False)["runId"]
        undo = f"{run_id}:configure/undo"
        wait_until(lambda: pool.holder(undo) == 0, 20, interval=0.02, what=f"the worker started {undo}")
        wait_until(
            lambda: (found := stored_run(broker, run_id)) and found[1].get("configure/undo") == "running",
            what="the store holds the compensation running",
        )
        broker.kill()
        wait_until(lambda: pool.counts("ok")[undo] == 1, 20, what=f"the worker finished {undo} after the broker died")
        broker.start()
        ended, steps = stored_end(broker, run_id)
        shown = cli_json(broker, "chain", "status", run_id)
        letters = state_rows(broker.root, f"select reason from dead_letters where message_id like '{run_id}%'")
    deploy = next(step for step in shown["steps"] if (step["name"], step["what"]) == ("deploy", "step"))
    assert shown["resumed"] >= 1, shown
    assert (
        deploy["tries"] == 1
        and deploy["error"] == "EXHAUSTED: every plugin failed (steps: STEP_FAILED: deploy failed, as it was told to)"
    ), deploy
    assert ended == "compensated", shown
    assert steps == {
        "create": "completed",
        "configure": "completed",
        "deploy": "failed",
        "configure/undo": "compensated",
        "create/undo": "compensated",
    }
    assert letters == []
    assert_once(pool, run_id, ("create", "configure", "configure/undo", "create/undo"), ("announce",), ("deploy",))
    assert pool.counts()[f"{run_id}:deploy"] == 1


def test_resuming_a_compensation_failed_saga_does_not_run_it_forward(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        failing = pool.spawn("--fail", "deploy,unconfigure")
        wait_workers(broker, 1)
        run_id = run_chain(broker, "test-saga")["runId"]
        assert stored_end(broker, run_id)[0] == "compensation-failed"
        failing.send_signal(signal.SIGTERM)
        assert failing.wait(30) == 0
        wait_workers(broker, 0)
        pool.spawn()  # the operator mended what made the compensation fail
        wait_workers(broker, 1)
        with Client(broker.frontend, timeout=60, retries=0) as client:
            reply = client.request("arbiter.chain", chain_request({"resume": run_id}))
        ended = stored_end(broker, run_id)[0]
    forward = [(key, outcome) for key, _, outcome, _ in pool.executions() if key in keys(run_id, "deploy", "announce")]
    assert forward == [(f"{run_id}:deploy", "error")], "no step of a saga that compensated runs forward again"
    if reply.ok:
        assert reply.result["status"] in ("compensated", "compensation-failed"), reply.result
    else:
        assert reply.error["code"] == "RUN_FINISHED", reply.error
    assert ended in ("compensated", "compensation-failed")


# -- many runs at once, with a worker restart among them -------------------------------------


RUNS = 50


def test_fifty_concurrent_runs_with_a_worker_restart_complete_every_step_once(tmp_path: Path) -> None:
    with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
        leaving = pool.spawn("--delay", "0.03")
        pool.spawn("--delay", "0.03")
        wait_workers(broker, 2)
        with Client(broker.frontend, timeout=10, retries=0) as client:
            started = []
            for n in range(RUNS):
                request = chain_request({"chain": "test-sequence", "params": {"value": f"v{n}"}, "wait": False})
                reply = client.request("arbiter.chain", request)
                assert reply.ok and reply.result["status"] == "running", reply.error
                started.append(reply.result["runId"])
        wait_until(lambda: len(pool.executions()) >= 80, 30, interval=0.01, what="80 steps were executed")
        leaving.send_signal(signal.SIGTERM)  # the SDK's stop: finish what it runs, then DISCONNECT
        assert leaving.wait(30) == 0
        at_restart = len(pool.executions())
        pool.spawn("--delay", "0.03")
        wait_workers(broker, 2)
        ended_sql = (
            "select id, status from tasks where parent_task_id is null and title = 'test-sequence' "
            f"and status in ({', '.join(repr(s) for s in ENDED)})"
        )
        ended = wait_until(
            lambda: len(rows := state_rows(broker.root, ended_sql)) >= RUNS and rows, 60, what=f"{RUNS} runs ended"
        )
        steps = state_rows(
            broker.root, "select status, count(*) from tasks where parent_task_id is not null group by 1"
        )
        info = status(broker.frontend)
    assert at_restart < RUNS * len(SEQUENCE), "the worker restarted while the runs were going on"
    assert sorted(run_id for run_id, _ in ended) == sorted(started)
    assert Counter(s for _, s in ended) == {"completed": RUNS}
    assert steps == [("completed", RUNS * len(SEQUENCE))]
    ran = pool.counts()
    expected = {f"{run_id}:{step}" for run_id in started for step in SEQUENCE}
    assert set(ran) == expected, ("lost", expected - set(ran), "unexpected", set(ran) - expected)
    assert [key for key, n in ran.items() if n > 1] == [], "no step ran twice"
    assert len(pool.executions()) == RUNS * len(SEQUENCE) == 250
    assert pool.counts("error") == Counter()
    assert pool.logs[0].exists() and pool.logs[1].exists(), "both first workers took steps"
    assert info["counters"].get("chain-runs-completed", 0) == RUNS


# -- events ----------------------------------------------------------------------------------


def test_a_runs_events_arrive_in_order_and_its_end_once_on_task_complete(tmp_path: Path) -> None:
    ctx = zmq.Context()
    try:
        with chain_broker(tmp_path) as broker, workers(broker, tmp_path) as pool:
            pool.spawn()
            wait_workers(broker, 1)
            events = subscriber(ctx, broker, "orchestration/")
            run_id = run_chain(broker, "test-sequence")["runId"]
            # a second run after it: whatever the first run published comes before the second's end
            marker = run_chain(broker, "test-branch")["runId"]
            seen: list[tuple[str, dict[str, Any]]] = []
            deadline = time.monotonic() + 20
            while not any(t == "orchestration/task-complete" and p["taskId"] == marker for t, p in seen):
                assert time.monotonic() < deadline, f"the second run's end never arrived; got {seen}"
                if events.poll(200):
                    frame, body = events.recv_multipart()
                    message = orjson.loads(body)
                    assert message["topic"] == frame.decode() and message["messageType"] == "event"
                    seen.append((message["topic"], message["payload"]))
            events.close()
    finally:
        ctx.destroy(linger=0)
    prefix = f"orchestration/chain/test-sequence/{run_id}/"
    mine = [(t.removeprefix(prefix), p) for t, p in seen if t.startswith(prefix)]
    expected = ["started"]
    for step in SEQUENCE:
        expected += [f"step-started {step}", f"step-completed {step}"]
    expected.append("completed")
    assert [f"{t} {p['step']}" if "step" in p else t for t, p in mine] == expected
    assert all(p["runId"] == run_id and p["chain"] == "test-sequence" for _, p in mine)
    assert mine[-1][1]["status"] == "completed"
    assert [p["stepStatus"] for t, p in mine if t == "step-completed"] == ["completed"] * len(SEQUENCE)
    ends = [(n, p) for n, (t, p) in enumerate(seen) if t == "orchestration/task-complete" and p["taskId"] == run_id]
    assert len(ends) == 1, ends
    (at, end), last_chain_event = ends[0], max(n for n, (t, _) in enumerate(seen) if t.startswith(prefix))
    assert len(end.pop("traceId")) == 32  # the run's trace (docs/TRACING.md)
    assert end == {"taskId": run_id, "chain": "test-sequence", "status": "completed", "error": None}
    assert at > last_chain_event, "the run's end comes after its own events"
    assert_once(pool, run_id, SEQUENCE, ())
