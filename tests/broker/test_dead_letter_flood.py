"""Dead letters under flood: a refusal answered at once is counted, not kept; a request that was
accepted and then could not be delivered is never dropped from the dead-letter queue, however
many come at once. Real broker process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import zmq
from broker_helpers import broker_with, dealer, recv, state_rows, status, wait_until

from arbiter.wire.mdp import MDPC01

pytestmark = pytest.mark.e2e

FLOOD = 12_000  # more than the recorder holds in memory (10,000): the rest goes through the spill file


def send_all(frontend: str, service: bytes, count: int) -> list[list[bytes]]:
    """``count`` plain requests from one client, then every answer."""
    sock = dealer(zmq.Context.instance(), frontend)
    try:
        for index in range(count):
            sock.send_multipart([b"", MDPC01, service, b"job %d" % index])
        answers = []
        while len(answers) < count:
            frames = recv(sock, 30)
            assert frames is not None, f"{count - len(answers)} requests were never answered"
            answers.append(frames)
        return answers
    finally:
        sock.close()


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
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "arbiter",
                "--root",
                str(broker.root),
                "dlq",
                "list",
                "--last",
                str(FLOOD + 10),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        letters = json.loads(listed.stdout)
        assert len(letters) == FLOOD and {letter["reason"] for letter in letters} == {"expired"}
