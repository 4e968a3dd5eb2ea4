"""A batch the broker cannot send, driven step by step in this process on the broker's real
frontend socket: the failure is made certain (the worker's identity belongs to no connection)
instead of waited for."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sdk_harness import free_port, make_project

from arbiter.daemon import build_broker, close_broker
from arbiter.protocol import BATCHED, MDPC01, MDPW01, READY

pytestmark = pytest.mark.e2e  # the broker's recorder is a process of its own


def test_a_batch_that_cannot_be_sent_hands_on_every_request_it_carried(tmp_path: Path) -> None:
    broker, reloader = build_broker(make_project(tmp_path, *(f"tcp://127.0.0.1:{free_port()}" for _ in range(3))))
    client, ghost = b"\x00client", b"\x00ghost"  # ROUTER identities no connection has
    try:
        for i in range(3):  # no worker yet: the requests wait
            broker._on_frontend([client, b"", MDPC01, b"svc", b"job %d" % i])
        broker._on_frontend([ghost, b"", MDPW01, READY, b"svc", b"3", BATCHED])
        (frames, worker, _), *rest = broker._outbox
        assert not rest and worker is not None and worker.delivery == BATCHED
        assert [frame[8:] for frame in frames[1:]] == [b"job 0", b"job 1", b"job 2"]  # one message

        broker._send_out()  # ROUTER_MANDATORY: no route to the ghost

        status = broker.status()
        assert status["services"]["svc"]["workers"] == 0 and status["services"]["svc"]["queued"] == 3
        assert status["counters"]["dropped"]["worker-unreachable"] == 1  # the message
        assert status["counters"]["workers-unreachable"] == 1
        assert status["counters"]["redelivered"] == 3  # and every request it carried
    finally:
        broker._close()
        close_broker(broker, reloader)
