"""Dead letters under flood: a refusal answered at once (a limit, a full queue) is counted, not
kept; a request that was accepted and then could not be delivered (expired, every try failed,
the broker stopped) is never dropped from the dead-letter queue, however many come at once, nor
when the store is busy as the broker stops. Real broker and worker processes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
from broker_helpers import broker_with, dealer, recv, state_rows, status, wait_until
from test_faults import RFP_TEXT, commands_of, processes, spawn_worker, wait_workers

from arbiter.broker.shutdown import GRACE_S
from arbiter.store import database as state
from arbiter.store import dead_letters as dlq
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01

pytestmark = pytest.mark.e2e

FLOOD = 12_000  # more than the recorder holds in memory (10,000): the rest goes through the spill file


def send_all(frontend: str, service: bytes, count: int) -> list[list[bytes]]:
    """``count`` plain requests from one client, then every answer."""
    sock = dealer(zmq.Context.instance(), frontend)
    try:
        for index in range(count):
            sock.send_multipart([b"", MDPC01, service, b"job %d" % index])
        return receive_all(sock, count)
    finally:
        sock.close()


def receive_all(sock: zmq.Socket, count: int, timeout_s: float = 30) -> list[list[bytes]]:
    answers = []
    while len(answers) < count:
        frames = recv(sock, timeout_s)
        assert frames is not None, f"{count - len(answers)} requests were never answered"
        answers.append(frames)
    return answers


def error_codes(answers: list[list[bytes]]) -> dict[str, int]:
    codes: dict[str, int] = {}
    for frames in answers:
        code = json.loads(frames[3])["payload"]["error"]["code"]
        codes[code] = codes.get(code, 0) + 1
    return codes


def test_refusals_are_counted_and_accepted_requests_that_expire_are_kept(tmp_path):
    with broker_with(tmp_path, {"request_timeout_ms": 300, "limits": {"client_inflight": 3}}) as broker:
        answers = send_all(broker.frontend, b"nobody", 20)
        assert error_codes(answers) == {"INFLIGHT_LIMIT": 17, "EXPIRED": 3}
        dropped = status(broker.frontend)["counters"]["dropped"]
        assert dropped["inflight-limit"] == 17 and dropped["expired"] == 3
        rows = wait_until(lambda: state_rows(broker.root, "SELECT reason FROM dead_letters"), what="3 letters")
        assert sorted(rows) == [("expired",)] * 3  # the refusals were answered, not kept


def test_every_request_expired_in_a_flood_is_in_the_dead_letter_queue(tmp_path):
    with broker_with(tmp_path, {"request_timeout_ms": 1000}) as broker:
        answers = send_all(broker.frontend, b"nobody", FLOOD)
        assert error_codes(answers) == {"EXPIRED": FLOOD}
        wait_until(
            lambda: state_rows(broker.root, "SELECT count(*) FROM dead_letters")[0][0] == FLOOD,
            timeout=60,
            what=f"all {FLOOD} letters stored",
        )
        # the rows are committed before the writer's confirmation reaches the broker's counters
        writer = wait_until(
            lambda: (w := status(broker.frontend)["writers"]["deadLetters"])["written"] == FLOOD and w,
            what="the writer's count of letters written",
        )
        assert writer["dropped"] == 0 and writer["written"] == FLOOD and writer["spilled"] > 0
        assert writer["inSpill"] == 0 and writer["queued"] == 0
        letters = listed_letters(broker.root, FLOOD)
        assert len(letters) == FLOOD and {letter["reason"] for letter in letters} == {"expired"}


def listed_letters(root: Path, at_most: int) -> list[dict[str, Any]]:
    """The dead-letter queue as ``arbiter dlq list --json`` shows it to an operator."""
    command = [sys.executable, "-m", "arbiter", "--root", str(root), "dlq", "list", "--last", str(at_most + 10)]
    listed = subprocess.run([*command, "--json"], capture_output=True, text=True, check=True)
    return json.loads(listed.stdout)


def letters_written(frontend: str, count: int) -> dict[str, Any]:
    """The dead-letter writer's figures once it has written ``count`` letters and holds none."""
    return wait_until(
        lambda: (w := status(frontend)["writers"]["deadLetters"])["written"] >= count and w["queued"] == 0 and w,
        timeout=60,
        what=f"{count} letters written",
    )


@pytest.mark.parametrize("limit", ["service_queue", "total_pending"])
def test_queue_full_refusals_are_counted_and_not_dead_lettered(tmp_path, limit):
    sent, held = 400, 5
    with broker_with(tmp_path, {"request_timeout_ms": 2000, "limits": {limit: held}}) as broker:
        requests = [env.new_request("nobody", "work", {"id": index}) for index in range(sent)]
        sock = dealer(zmq.Context.instance(), broker.frontend)
        try:
            for request in requests:
                sock.send_multipart([b"", MDPC01, b"nobody", orjson.dumps(request)])
            answers = receive_all(sock, sent)
        finally:
            sock.close()
        codes = error_codes(answers)
        assert set(codes) == {"QUEUE_FULL", "EXPIRED"} and sum(codes.values()) == sent, codes
        assert held <= codes["EXPIRED"] < sent // 4, codes  # a few queued, and each expired; the rest refused
        expired = {
            orjson.loads(frames[3])["correlationId"]
            for frames in answers
            if orjson.loads(frames[3])["payload"]["error"]["code"] == "EXPIRED"
        }
        writer = letters_written(broker.frontend, codes["EXPIRED"])
        now = status(broker.frontend)
        assert now["counters"]["dropped"]["queue-full"] == codes["QUEUE_FULL"]
        assert now["counters"]["dropped"]["expired"] == codes["EXPIRED"]
        assert now["counters"].get("dead-letters-expired") == codes["EXPIRED"]
        assert writer["written"] == codes["EXPIRED"] and writer["dropped"] == 0 and now["pending"] == 0
        letters = listed_letters(broker.root, sent)
        assert len(letters) == codes["EXPIRED"] and {letter["reason"] for letter in letters} == {dlq.EXPIRED}
        assert {letter["messageId"] for letter in letters} == expired  # not one refusal among them


def failing_plugin(root: Path) -> None:
    """exec-automator fails fast: one retry, no fallback, no circuit breaker to cut the flood short."""
    path = root / "plugins" / "exec-automator" / ".claude-plugin" / "plugin.json"
    manifest = json.loads(path.read_text())
    manifest["errorHandling"] = {
        "circuitBreaker": {"enabled": False, "threshold": 1000, "timeout": 1000, "halfOpenRetries": 1},
        "retryPolicy": {"maxRetries": 1, "backoff": "linear", "initialDelay": 10, "maxDelay": 20, "jitter": 0.1},
        "fallback": {"strategy": "graceful-degradation", "fallbackPlugins": []},
    }
    path.write_text(json.dumps(manifest, indent=2))


def test_every_routed_request_that_exhausts_its_tries_in_a_flood_is_in_the_dead_letter_queue(tmp_path):
    sent = 2000
    with broker_with(tmp_path, {"deciders": 0}, failing_plugin) as broker, processes() as running:
        log = tmp_path / "worker.log"
        commands = commands_of("exec-automator")
        running.append(spawn_worker(broker, "exec-automator", log, mode="error", credit=50, commands=commands, delay=0))
        wait_workers(broker, "exec-automator", 1)
        requests = []
        for index in range(sent):
            request = env.new_request("arbiter.route", "route", timeout_ms=60_000)
            request["payload"] = {"text": f"{RFP_TEXT} (copy {index})", "command": "analyze-document"}
            requests.append(request)
        sock = dealer(zmq.Context.instance(), broker.frontend)
        try:
            started = time.monotonic()
            for request in requests:
                sock.send_multipart([b"", MDPC01, b"arbiter.route", orjson.dumps(request)])
            answers = receive_all(sock, sent)
            took = time.monotonic() - started
        finally:
            sock.close()
        assert error_codes(answers) == {"EXHAUSTED": sent}
        writer = letters_written(broker.frontend, sent)
        assert writer["written"] == sent and writer["dropped"] == 0
        assert status(broker.frontend)["counters"]["dead-letters-exhausted"] == sent
        ran = [line.split() for line in log.read_text().splitlines()]
        print(f"{sent} routed requests exhausted in {took:.1f}s; {len(ran)} tries")
    letters = listed_letters(broker.root, sent)
    assert len(letters) == sent and {letter["reason"] for letter in letters} == {dlq.EXHAUSTED}
    assert {letter["messageId"] for letter in letters} == {request["messageId"] for request in requests}
    assert all(letter["service"] == "arbiter.route" for letter in letters)
    assert sorted(retry for _, retry in ran) == ["0"] * sent + ["1"] * sent  # each tried, then retried once


def queued_for_nobody(broker, sent: int) -> tuple[list[dict], zmq.Socket]:
    """``sent`` requests for a service nobody serves, all queued in the broker, and the socket
    their answers will come to."""
    requests = [env.new_request("nobody", "work", {"id": index}, timeout_ms=120_000) for index in range(sent)]
    sock = dealer(zmq.Context.instance(), broker.frontend)
    for request in requests:
        sock.send_multipart([b"", MDPC01, b"nobody", orjson.dumps(request)])
    wait_until(lambda: status(broker.frontend)["pending"] == sent, what=f"all {sent} requests queued")
    return requests, sock


def test_every_request_queued_when_the_broker_stops_is_in_the_dead_letter_queue(tmp_path):
    sent = 3000
    with broker_with(tmp_path, {"request_timeout_ms": 120_000}) as broker:
        requests, sock = queued_for_nobody(broker, sent)
        try:
            started = time.monotonic()
            broker.process.send_signal(signal.SIGTERM)
            answers = receive_all(sock, sent, timeout_s=GRACE_S + 10)
            assert broker.process.wait(GRACE_S + 10) == 0
            stopped = time.monotonic() - started
        finally:
            sock.close()
        assert error_codes(answers) == {"SHUTTING_DOWN": sent}
        assert stopped < GRACE_S + 5, f"stopping took {stopped:.1f}s"
        print(f"{sent} queued requests answered and the broker stopped in {stopped:.2f}s")
        letters = listed_letters(broker.root, sent)  # from the store: the broker is gone
    assert len(letters) == sent and {letter["reason"] for letter in letters} == {dlq.SHUTDOWN}
    assert {letter["messageId"] for letter in letters} == {request["messageId"] for request in requests}


def test_dead_letters_a_locked_store_cannot_take_as_the_broker_stops_are_written_when_it_starts_again(tmp_path):
    """The store is busy (an operator's open transaction) while the broker stops: what its writer
    could not write in the time it has is kept in the spill file, and the next broker on the
    project writes it."""
    sent = 200
    with broker_with(tmp_path, {"request_timeout_ms": 120_000}) as broker:
        requests, sock = queued_for_nobody(broker, sent)
        try:
            store = sqlite3.connect(broker.root / ".arbiter" / "state.db", isolation_level=None)
            try:
                store.execute("BEGIN EXCLUSIVE")  # nobody else writes, or reads, until it ends
                broker.process.send_signal(signal.SIGTERM)
                answers = receive_all(sock, sent, timeout_s=GRACE_S + 10)
                assert broker.process.wait(60) == 0
            finally:
                store.execute("ROLLBACK")
                store.close()
        finally:
            sock.close()
        assert error_codes(answers) == {"SHUTTING_DOWN": sent}
        assert state_rows(broker.root, "SELECT count(*) FROM dead_letters") == [(0,)]
        broker.start()
        wait_until(
            lambda: state_rows(broker.root, "SELECT count(*) FROM dead_letters") == [(sent,)],
            what=f"the {sent} letters written by the broker started again",
        )
        letters = listed_letters(broker.root, sent)
    assert {letter["reason"] for letter in letters} == {dlq.SHUTDOWN}
    assert {letter["messageId"] for letter in letters} == {request["messageId"] for request in requests}


def test_storing_a_letter_costs_the_same_however_many_letters_of_its_service_the_store_holds(tmp_path):
    """Each letter is checked against the pending ones of its message (a repeat is counted, not
    stored again): that lookup must go by the message's id, not read every letter of the
    service, or a flood of letters to one service is written ever more slowly and the broker
    cannot write them all as it stops. Measured in SQLite's steps, which do not depend on the
    machine's speed."""

    def letter(index: int) -> dlq.Letter:
        request = env.new_request("nobody", "work", {"id": index})
        return dlq.new_letter("nobody", [orjson.dumps(request)], dlq.SHUTDOWN, "SHUTTING_DOWN", request["messageId"])

    def steps_to_store(index: int) -> int:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # go on

        connection = dlq.DeadLetter._meta.database.connection()
        connection.set_progress_handler(count, 10)
        try:
            dlq.write_letters([letter(index)])
        finally:
            connection.set_progress_handler(None, 10)
        return steps[0]

    state.open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        few = steps_to_store(0)
        dlq.write_letters([letter(index) for index in range(1, 3001)])
        many = steps_to_store(3001)
        assert many < 2 * few, (few, many)
        assert dlq.DeadLetter.select().count() == 3002
    finally:
        state.close_store()
