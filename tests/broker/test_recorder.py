"""The broker's recorder process: decision rows, circuit states and dead letters reach the
database, in order, exactly once, through a recorder that dies, stalls or is never started; what
waits is bounded and counted; the decision log's retention is applied a bounded round at a time."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from arbiter.routing.pipeline import Request
from arbiter.store import database as state
from arbiter.store import dead_letters as dlq
from arbiter.store import decisions as record
from arbiter.store import models
from arbiter.store.recorder import Recorder, sweep_stale_sockets
from arbiter.store.retention import Retention
from arbiter.wire import envelope as env

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
        assert time.monotonic() < deadline, (
            f"not settled: written {recorder.written}, queued {recorder.queued}, errors {recorder.errors[-3:]}"
        )
        recorder.flush()
        time.sleep(0.01)  # the pace of the broker's flush timer, between two looks at ``done``


def submit(recorder: Recorder, template: record.RowTemplate, ids: range) -> None:
    for i in ids:
        recorder.submit_entry(template.entry("req_first" if i == 0 else f"req_{i}", {"status": "success"}, True))


def stored_request_ids() -> list[str]:
    return [row.request_id for row in models.RoutingDecision.select(models.RoutingDecision.request_id)]


def letter_counts() -> dict[str | None, int]:
    return {row.message_id: row.count for row in models.DeadLetter.select()}


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


def test_when_written_calls_back_once_what_came_before_is_in_the_database(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path, max_batch=100)
    seen: list[int] = []
    recorder.when_written(lambda: seen.append(len(stored_request_ids())))
    assert seen == [0]  # nothing held: at once
    submit(recorder, template, range(250))
    recorder.when_written(lambda: seen.append(len(stored_request_ids())))
    submit(recorder, template, range(250, 300))  # after the call: not waited for
    assert seen == [0]
    settle(recorder, lambda: len(seen) == 2)
    assert seen[1] >= 250


def test_a_killed_recorder_is_replaced_and_no_row_is_lost_or_doubled(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path, max_batch=50)

    def submit_with_letters(ids: range) -> None:
        for start_at in range(ids.start, ids.stop, 100):  # a letter every hundred rows; repeats merge
            submit(recorder, template, range(start_at, start_at + 100))
            recorder.dead_letters.submit("svc", [b"body"], dlq.EXHAUSTED, None, f"m{start_at // 100 % 3}")

    submit_with_letters(range(1000))
    settle(recorder, lambda: recorder.written > 0)
    first = recorder.process
    submit_with_letters(range(1000, 2000))
    recorder.flush()  # these batches are on their way to the process killed now
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    submit_with_letters(range(2000, 3000))
    settle(recorder, lambda: recorder.queued == 0 and recorder.dead_letters.queued == 0)

    ids = stored_request_ids()
    assert len(ids) == len(set(ids)) == 3000
    assert recorder.written == 3000 and recorder.dropped == 0
    assert letter_counts() == {"m0": 10, "m1": 10, "m2": 10} and recorder.dead_letters.written == 30
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
    settle(recorder, lambda: len(recorder.errors) >= 4)  # four recorders died
    assert all("exited with code 1" in e for e in recorder.errors)
    delays = [float(re.search(r"starting another in ([0-9.]+)s", e).group(1)) for e in recorder.errors]
    # each death waits at least as long as the one before, and soon far longer: 0.1, 0.2, 0.4, 0.8 s
    assert delays == sorted(delays) and delays[3] >= 4 * delays[0], f"restarted in a tight loop: {delays}"
    assert recorder.restarts == 3  # the fourth is still waiting out its delay
    assert recorder.queued == 10 and recorder.written == 0  # held, not lost, while no recorder runs
    recorder.close(timeout=1)


# ---------------------------------------------------------------- dead letters


def test_dead_letters_go_in_order_with_the_rows_and_are_counted_apart(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path)
    request = env.new_request("svc", "run")
    submit(recorder, template, range(5))
    recorder.dead_letters.submit("svc", [env.encode(request)], dlq.EXPIRED, "waited too long", None, "c0")
    recorder.submit_circuit("aws-cdk", "1.0.0", "open", "5 failures in 60s")
    recorder.dead_letters.submit("svc", [env.encode(request)], dlq.EXPIRED, "again", None, "c0")
    recorder.dead_letters.submit("raw", [b"\x00", b"\xff"], dlq.REJECTED, "TOO_LARGE: ...", None, "c1")
    submit(recorder, template, range(5, 10))
    recorder.close()
    recorder.dead_letters.close()  # closing either closes the one process: a second close does nothing

    assert (recorder.written, recorder.dropped, recorder.queued) == (10, 0, 0)
    letters = recorder.dead_letters
    assert (letters.written, letters.dropped, letters.queued, letters.errors) == (3, 0, 0, [])
    assert letter_counts() == {request["messageId"]: 2, None: 1}  # the message id read from the envelope
    merged = models.DeadLetter.get(models.DeadLetter.message_id == request["messageId"])
    assert (merged.detail, merged.client, merged.reason) == ("again", "c0", dlq.EXPIRED)
    raw = models.DeadLetter.get(models.DeadLetter.service == "raw")
    assert dlq.frames_of(raw) == [b"\x00", b"\xff"]
    assert record.saved_circuits()["aws-cdk"]["circuit"] == "open" and len(stored_request_ids()) == 10


def test_letters_the_database_refuses_are_spilled_and_written_once_it_takes_them(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    """A dead letter is the request itself: a database error sends it to the spill file, not away."""
    db = state.database.obj
    db.execute_sql(
        "CREATE TRIGGER refuse_letters BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'letters refused'); END"
    )
    recorder = start(recorders, store, tmp_path)
    letters = recorder.dead_letters
    letters.submit("svc", [b"x"], dlq.EXPIRED)
    letters.submit("svc", [b"y"], dlq.SHUTDOWN)
    settle(recorder, lambda: letters.spilled >= 2)
    assert (letters.written, letters.dropped) == (0, 0)
    assert "letters refused" in letters.errors[-1] and recorder.errors == []
    submit(recorder, template, range(3))
    settle(recorder, lambda: recorder.written == 3)  # decision rows go through meanwhile
    db.execute_sql("DROP TRIGGER refuse_letters")
    settle(recorder, lambda: letters.written == 2 and letters.waiting_in_spill == 0 and letters.queued == 0)
    assert sorted(dlq.frames_of(row)[0] for row in models.DeadLetter.select()) == [b"x", b"y"]
    assert not list((tmp_path / ".arbiter").glob("dead-letters-*.spill"))  # read back whole, then gone
    letters.submit("", [b"z"], dlq.EXPIRED)  # no service: refused at once, counted
    assert letters.dropped == 1 and "without a service" in letters.errors[-1]


def test_a_flood_of_letters_beyond_memory_is_spilled_and_every_one_stored(
    store: str, recorders: list[Recorder], tmp_path: Path
) -> None:
    recorder = start(recorders, store, tmp_path, max_letters=20)
    letters = recorder.dead_letters
    for i in range(500):
        letters.submit("svc", [b"job %d" % i], dlq.EXPIRED, None, None, "c")
    assert letters.queued <= 20 and letters.waiting_in_spill >= 480
    settle(recorder, lambda: letters.written == 500)
    assert (letters.dropped, letters.waiting_in_spill, models.DeadLetter.select().count()) == (0, 0, 500)


def test_a_letter_is_lost_only_when_the_spill_file_cannot_be_written_either(
    store: str, recorders: list[Recorder], tmp_path: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / ".arbiter").write_text("a file where the folder should be")  # nothing can be spilled
    recorder = start(recorders, store, root, max_letters=1)
    letters = recorder.dead_letters
    letters.submit("svc", [b"held"], dlq.EXPIRED)
    letters.submit("svc", [b"lost"], dlq.EXPIRED)
    assert letters.dropped == 1 and "spill file" in letters.errors[-1]
    settle(recorder, lambda: letters.written == 1)


def test_a_confirmation_lost_with_the_recorder_sends_the_batch_again_without_doubling(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path
) -> None:
    """The recorder wrote a batch and was killed before the broker read its confirmation: the
    broker sends the batch again, and the store recognises every row and letter in it."""
    recorder = start(recorders, store, tmp_path)
    submit(recorder, template, range(1))
    settle(recorder, lambda: recorder.written == 1)  # the recorder is connected: a flush sends at once
    submit(recorder, template, range(1, 20))
    for detail in ("first", "repeat"):
        recorder.dead_letters.submit("svc", [b"body"], dlq.EXHAUSTED, detail, "m1")
    recorder.dead_letters.submit("svc", [b"other"], dlq.EXHAUSTED)
    recorder.flush()
    assert recorder._sock.poll(int(WAIT_S * 1000)), "the recorder never confirmed"
    recorder._sock.recv()  # the confirmation is lost: to the broker, the batch is still unwritten
    first = recorder.process
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    settle(recorder, lambda: recorder.queued == 0 and recorder.dead_letters.queued == 0)

    assert recorder.restarts == 1
    assert len(stored_request_ids()) == 20 and recorder.written == 20
    assert letter_counts() == {"m1": 2, None: 1} and recorder.dead_letters.written == 3


def test_a_stalled_recorder_bounds_the_letters_that_wait(store: str, recorders: list[Recorder], tmp_path: Path) -> None:
    recorder = start(recorders, store, tmp_path, max_batch=10, max_letters=5)
    os.kill(recorder.process.pid, signal.SIGSTOP)
    try:
        for index in range(12):
            recorder.dead_letters.submit("svc", [b"%d" % index], dlq.EXPIRED)
        recorder.flush()
        letters = recorder.dead_letters
        assert (letters.queued, letters.waiting_in_spill, letters.dropped) == (5, 7, 0)  # held apart, not lost
    finally:
        os.kill(recorder.process.pid, signal.SIGCONT)
    settle(recorder, lambda: recorder.dead_letters.written == 12)
    assert models.DeadLetter.select().count() == 12


# ---------------------------------------------------------------- retention


def test_the_recorder_applies_retention_a_bounded_round_at_a_time(
    store: str, template: record.RowTemplate, recorders: list[Recorder], tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    long_ago = models.now() - dt.timedelta(days=40)
    for index in range(250):
        models.RoutingDecision.create(request_id=f"old_{index}", created_at=long_ago + dt.timedelta(seconds=index))
    retention = Retention(max_age_s=30 * 86400, max_rows=20, every_s=0.1, per_round=100)
    recorder = start(recorders, store, tmp_path, retention=retention)
    submit(recorder, template, range(30))  # rows keep coming while it prunes
    settle(recorder, lambda: recorder.queued == 0 and models.RoutingDecision.select().count() == 20)
    recorder.close()

    assert sorted(stored_request_ids()) == sorted(f"req_{i}" for i in range(10, 30))  # the newest 20
    rounds = [int(n) for n in re.findall(r"pruned (\d+) routing decision", capfd.readouterr().err)]
    assert rounds[:2] == [100, 100] and sum(rounds) == 260 and max(rounds) <= 100
