"""A batch the broker cannot send, driven step by step in this process on the broker's real
frontend socket: the failure is made certain (the worker's identity belongs to no connection)
instead of waited for."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import zmq
from test_sdk_harness import free_port, make_project

from arbiter.broker.daemon import build_broker, close_broker
from arbiter.broker.loop import Broker
from arbiter.wire.mdp import BATCHED, MDPC01, MDPW01, READY

pytestmark = pytest.mark.e2e  # the broker's recorder is a process of its own

CLIENT, GHOST = b"\x00client", b"\x00ghost"  # ROUTER identities no connection has


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker built as the daemon builds it, whose loop the test drives itself."""
    broker, reloader = build_broker(make_project(tmp_path, *(f"tcp://127.0.0.1:{free_port()}" for _ in range(3))))
    try:
        yield broker
    finally:
        broker.close()
        close_broker(broker, reloader)


def queue_for_ghost(broker: Broker, jobs: int) -> None:
    """``jobs`` requests wait for service svc; then a batched worker that no connection has takes them."""
    for i in range(jobs):
        broker.handle([CLIENT, b"", MDPC01, b"svc", b"job %d" % i])
    broker.handle([GHOST, b"", MDPW01, READY, b"svc", str(jobs).encode(), BATCHED])


def test_a_batch_that_cannot_be_sent_hands_on_every_request_it_carried(broker: Broker) -> None:
    queue_for_ghost(broker, 3)
    (frames, worker, _), *rest = broker.outbox
    assert not rest and worker is not None and worker.delivery == BATCHED
    assert [frame[8:] for frame in frames[1:]] == [b"job 0", b"job 1", b"job 2"]  # one message

    broker.flush()  # ROUTER_MANDATORY: no route to the ghost
    assert broker.status()["services"]["svc"]["queued"] == 0  # not before what the ghost said last is read
    broker.pool.forget_unreachable()  # the loop does this once a read of the frontend ran dry

    status = broker.status()
    assert status["services"]["svc"]["workers"] == 0 and status["services"]["svc"]["queued"] == 3
    assert status["counters"]["dropped"]["worker-unreachable"] == 1  # the message
    assert status["counters"]["workers-unreachable"] == 1
    assert status["counters"]["redelivered"] == 3  # and every request it carried


def test_a_request_after_a_batch_went_out_travels_in_a_message_of_its_own(broker: Broker) -> None:
    """The ghost's requests pass to a live batched worker while the outbox is being sent, in a
    message that the same send takes along; a request after that must not join that message."""
    assert broker.frontend is not None
    live = broker.ctx.socket(zmq.DEALER)
    live.setsockopt(zmq.LINGER, 0)
    live.connect(broker.frontend.getsockopt_string(zmq.LAST_ENDPOINT))
    try:
        queue_for_ghost(broker, 3)
        live.send_multipart([b"", MDPW01, READY, b"svc", b"10", BATCHED])
        assert broker.frontend.poll(5000)
        broker.handle(broker.frontend.recv_multipart())

        broker.flush()  # the ghost's message fails
        broker.pool.forget_unreachable()  # as the loop does after a drain: its requests go to the live worker
        broker.flush()  # ... and out
        broker.handle([CLIENT, b"", MDPC01, b"svc", b"job 3"])
        broker.flush()

        received = []
        while live.poll(2000) and len(received) < 4:
            received += [frame[8:] for frame in live.recv_multipart()]
        assert received == [b"job 0", b"job 1", b"job 2", b"job 3"]
    finally:
        live.close()
