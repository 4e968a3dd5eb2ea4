"""The runner's semantics, driven step by step: what it sends, in which order, and what a step's
end means for the run (sequential, conditional, saga, parallel, timeout, resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
from arbiter.dsl.program import load_rules

from arbiter.orchestration.runner import ChainRun, Outcome, StepState, restore


class Host:
    """Records what the run asks; the test answers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict]] = []  # (key, command, args)
        self.events: list[tuple[str | None, str]] = []
        self.abandoned: list[str] = []
        self.letters: list[str] = []

    def send(self, run, step: StepState, timeout_ms: int, retries: int) -> None:
        self.sent.append((step.key, step.command, dict(step.args)))

    def abandon(self, run, step: StepState) -> None:
        self.abandoned.append(step.key)

    def changed(self, run, step, event: str) -> None:
        self.events.append((step.key if step else None, event))

    def lost(self, run, step) -> None:
        self.letters.append(step.key)


def plan(tmp_path: Path, source: str):
    (tmp_path / "c.arb").write_text(source)
    bundle = load_rules([tmp_path], {})
    return next(iter(bundle.chains.values()))


def run_of(tmp_path: Path, source: str, **params):
    host = Host()
    run = ChainRun("run_1", plan(tmp_path, source), params, host)
    run.start()
    return run, host


def ok(run: ChainRun, key: str, result=None) -> None:
    run.step_done(key, Outcome(True, result or {}))


def fail(run: ChainRun, key: str, error: str = "UPSTREAM: broke") -> None:
    run.step_done(key, Outcome(False, None, error))


SEQ = """chain c sequential (id: string) {
  step a: p make with id = $id
  step b: p use with thing = a.thing
  step c: p finish when b.state == "done"
}
"""


def test_sequential_steps_read_earlier_results_and_skip_on_when(tmp_path):
    run, host = run_of(tmp_path, SEQ, id="x1")
    assert host.sent == [("a", "make", {"id": "x1"})]
    ok(run, "a", {"thing": 42})
    assert host.sent[-1] == ("b", "use", {"thing": 42})
    ok(run, "b", {"state": "later"})
    assert run.status == "completed" and run.steps["c"].status == "skipped"
    assert run.to_json()["result"] == {"state": "later"}


def test_a_failed_step_fails_the_run_and_nothing_after_it_runs(tmp_path):
    run, host = run_of(tmp_path, SEQ, id="x1")
    fail(run, "a")
    assert run.status == "failed" and "step a failed: UPSTREAM: broke" in run.error
    assert [s[0] for s in host.sent] == ["a"]


def test_a_missing_field_fails_the_step_that_reads_it(tmp_path):
    run, host = run_of(tmp_path, SEQ, id="x1")
    ok(run, "a", {"other": 1})
    assert run.status == "failed" and run.steps["b"].error.startswith("BAD_REFERENCE: a.thing")


BRANCH = """chain d sequential (env: string = "dev") {
  if $env == "prod" {
    step build: p build with tag = "prod"
  } else {
    step dev: p build with tag = "dev"
  }
  step deploy: p deploy
}
"""


@pytest.mark.parametrize(
    ("env", "first"), [("prod", ("build", "build", {"tag": "prod"})), ("dev", ("dev", "build", {"tag": "dev"}))]
)
def test_both_branches_of_a_conditional(tmp_path, env, first):
    run, host = run_of(tmp_path, BRANCH, env=env)
    assert host.sent == [first]
    ok(run, first[0])
    ok(run, "deploy")
    assert run.status == "completed" and [s[0] for s in host.sent] == [first[0], "deploy"]


SAGA = """chain s saga (t: string) {
  step one: p create with t = $t compensate delete with id = one.id
  step two: p configure with t = $t compensate unconfigure with id = two.id
  step three: p deploy with t = $t compensate undeploy with id = three.id
  step four: p announce with t = $t compensate unannounce
}
"""


def test_a_saga_compensates_the_completed_steps_in_reverse_order_once_each(tmp_path):
    run, host = run_of(tmp_path, SAGA, t="acme")
    ok(run, "one", {"id": 1})
    ok(run, "two", {"id": 2})
    fail(run, "three")
    assert run.status == "compensating"
    assert host.sent[-1] == ("two/undo", "unconfigure", {"id": 2})
    ok(run, "two/undo")
    assert host.sent[-1] == ("one/undo", "delete", {"id": 1})
    ok(run, "one/undo")
    assert run.status == "compensated"
    assert [s[0] for s in host.sent] == ["one", "two", "three", "two/undo", "one/undo"]


def test_a_compensation_that_still_fails_ends_compensation_failed_with_a_letter(tmp_path):
    run, host = run_of(tmp_path, SAGA, t="acme")
    ok(run, "one", {"id": 1})
    ok(run, "two", {"id": 2})
    fail(run, "three")
    fail(run, "two/undo", "TIMEOUT: gone")
    ok(run, "one/undo")  # the others are still compensated
    assert run.status == "compensation-failed" and host.letters == ["two/undo"]


PARALLEL = """chain p parallel {mode} timeout 2m {{
  step x: a one
  step y: b two
  step z: c three
}}
"""


def test_parallel_wait_all_keeps_every_outcome(tmp_path):
    run, host = run_of(tmp_path, PARALLEL.format(mode="wait-all"))
    assert sorted(s[0] for s in host.sent) == ["x", "y", "z"]
    fail(run, "y")
    assert run.status == "running"
    ok(run, "x")
    ok(run, "z")
    assert run.status == "failed" and [s.status for s in run.steps.values()] == ["completed", "failed", "completed"]


def test_parallel_fail_fast_abandons_the_others(tmp_path):
    run, host = run_of(tmp_path, PARALLEL.format(mode="fail-fast"))
    fail(run, "y")
    assert run.status == "failed" and sorted(host.abandoned) == ["x", "z"]
    ok(run, "x")  # a late answer is ignored
    assert run.steps["x"].status == "cancelled"


def test_a_parallel_group_past_its_timeout(tmp_path):
    run, host = run_of(tmp_path, PARALLEL.format(mode="wait-all"))
    ok(run, "x")
    run.fail_timeout()
    assert run.status == "timed-out" and sorted(host.abandoned) == ["y", "z"]


def test_a_resumed_run_sends_again_what_was_in_flight_and_keeps_what_completed(tmp_path):
    run, host = run_of(tmp_path, SEQ, id="x1")
    ok(run, "a", {"thing": 7})
    stored = [dict(s.to_json(), order=s.order, meta={"args": s.args, "tries": s.tries}) for s in run.steps.values()]
    again = restore(ChainRun("run_1", run.plan, {"id": "x1"}, Host()), stored)
    again.resume()
    assert again.host.sent == [("b", "use", {"thing": 7})] and again.resumed == 1
    assert again.key(again.steps["b"]) == run.key(run.steps["b"]) == "run_1:b"  # the same idempotency key
