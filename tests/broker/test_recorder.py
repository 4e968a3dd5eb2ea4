"""The decision log's own process: rows reach the database, in order, exactly once, through a
recorder that dies, stalls or is never started; what waits is bounded and counted."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from arbiter.routing.pipeline import Request
from arbiter.store import database as state
from arbiter.store import decisions as record
from arbiter.store.recorder import Recorder, sweep_stale_sockets

WAIT_S = 30.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    state.open_store(url)
    yield url
    state.close_store()


@pytest.fixture
def template(shipped_router: Any) -> record.RowTemplate:
    data = shipped_router.route(Request("create a keycloak realm", request_id="req_first")).to_json(False)
    return record.RowTemplate.of(data, "broker")


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    """Every recorder a test starts is closed afterwards, so no child process outlives it."""
    started: list[Recorder] = []
    yield started
    for recorder in started:
        if not recorder.closed:
            recorder.close(timeout=5)


def start(recorders: list[Recorder], url: str, tmp_path: Path, **options: Any) -> Recorder:
    recorder = Recorder(url, tmp_path, **options)
    recorders.append(recorder)
    return recorder


def settle(recorder: Recorder, done: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Drive the recorder as the broker's loop does until ``done`` (bounded)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not settled: written {recorder.written}, queued {recorder.queued}"
        recorder.flush()
        time.sleep(0.01)


def submit(recorder: Recorder, template: record.RowTemplate, ids: range) -> None:
    for i in ids:
        recorder.submit_entry(template.entry("req_first" if i == 0 else f"req_{i}", {"status": "success"}, True))


def stored_request_ids() -> list[str]:
    return [row.request_id for row in state.RoutingDecision.select(state.RoutingDecision.request_id)]


def test_rows_reach_the_database_and_close_ends_the_process(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path, max_batch=100)
    submit(recorder, template, range(2500))
    settle(recorder, lambda: recorder.written == 2500)
    process, folder = recorder.process, Path(recorder.endpoint.removeprefix("ipc://")).parent
    recorder.close()

    assert sorted(stored_request_ids()) == sorted(["req_first", *(f"req_{i}" for i in range(1, 2500))])
    assert recorder.dropped == 0 and recorder.errors == [] and recorder.queued == 0
    assert process.poll() == 0 and not folder.exists()


def test_rows_submitted_just_before_close_are_written(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path)
    submit(recorder, template, range(300))
    recorder.close()  # no flush in between: close sends what is held
    assert recorder.written == 300 and len(stored_request_ids()) == 300


def test_a_killed_recorder_is_replaced_and_no_row_is_lost_or_doubled(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path, max_batch=50)
    submit(recorder, template, range(1000))
    settle(recorder, lambda: recorder.written > 0)
    first = recorder.process
    submit(recorder, template, range(1000, 2000))
    recorder.flush()  # these batches are on their way to the process killed now
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    submit(recorder, template, range(2000, 3000))
    settle(recorder, lambda: recorder.queued == 0)

    ids = stored_request_ids()
    assert len(ids) == len(set(ids)) == 3000
    assert recorder.written == 3000 and recorder.dropped == 0
    assert recorder.restarts == 1 and recorder.process.pid != first.pid
    assert any("exited with code -9" in e for e in recorder.errors)


def test_a_stalled_recorder_bounds_what_waits_and_counts_the_rest(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path, max_batch=10, max_queue=100)
    os.kill(recorder.process.pid, signal.SIGSTOP)
    try:
        submit(recorder, template, range(250))
        recorder.flush()
        assert recorder.queued == 100 and recorder.dropped == 150
    finally:
        os.kill(recorder.process.pid, signal.SIGCONT)
    settle(recorder, lambda: recorder.queued == 0)
    assert recorder.written == 100 and len(stored_request_ids()) == 100


def test_circuit_states_are_kept(store: str, recorders: list[Recorder], tmp_path: Path) -> None:
    recorder = start(recorders, store, tmp_path)
    recorder.submit_circuit("aws-cdk", "1.0.0", "open", "5 failures in 60s")
    settle(recorder, lambda: "aws-cdk" in record.saved_circuits())
    assert record.saved_circuits()["aws-cdk"]["circuit"] == "open"


def test_a_database_refusing_rows_is_reported_not_retried_forever(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path)
    entry = template.entry("req_bad", {}, True)
    recorder.submit_entry((entry[0], None, *entry[2:]))  # type: ignore[arg-type]  # no id: the primary key refuses it
    settle(recorder, lambda: recorder.queued == 0)
    assert recorder.dropped == 1 and recorder.written == 0
    assert "IntegrityError" in recorder.errors[-1]


def test_sweep_removes_only_the_sockets_nobody_listens_on(tmp_path: Path) -> None:
    dead, live, fresh = (tmp_path / f"arbiter-recorder-{name}" for name in ("dead", "live", "fresh"))
    for folder in (dead, live, fresh):
        folder.mkdir()
    gone = socket.socket(socket.AF_UNIX)
    gone.bind(str(dead / "log"))
    gone.close()  # the file stays, nobody listens: a broker killed with its recorder
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(live / "log"))
    listening.listen()
    try:
        sweep_stale_sockets(str(tmp_path))
    finally:
        listening.close()
    assert not dead.exists() and live.exists() and fresh.exists()


def test_a_recorder_that_cannot_start_is_retried_ever_more_slowly(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, "nosuchdb://nowhere", tmp_path)
    submit(recorder, template, range(10))
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        recorder.flush()
        time.sleep(0.01)
    assert 1 <= recorder.restarts <= 6, "restarted in a tight loop"  # 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s apart
    assert all("exited with code 1" in e for e in recorder.errors)
    assert recorder.queued == 10 and recorder.written == 0  # held, not lost, while no recorder runs
    recorder.close(timeout=1)
