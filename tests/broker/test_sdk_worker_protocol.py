"""The SDK worker's side of MDP/0.1, checked frame by frame against a ROUTER socket playing broker."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
import zmq

from arbiter.sdk.client import build_request
from arbiter.sdk.worker import Worker
from arbiter.wire import envelope as env
from arbiter.wire.mdp import BATCHED, DISCONNECT, HEARTBEAT, MDPW01, PACKED, READY, REPLY, REQUEST, credit_frame

RECV_MS = 20_000


class FakeBroker:
    """A bare ROUTER: the test reads what the worker sends and writes what a broker would."""

    def __init__(self) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def recv(self, skip_heartbeats: bool = True) -> list[bytes]:
        while True:
            assert self.sock.poll(RECV_MS), "the worker sent nothing"
            frames = self.sock.recv_multipart()
            if not (skip_heartbeats and frames[3:4] == [HEARTBEAT]):
                return frames

    def send(self, identity: bytes, command: bytes, *rest: bytes) -> None:
        self.sock.send_multipart([identity, b"", MDPW01, command, *rest])

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    broker = FakeBroker()
    yield broker
    broker.close()


@pytest.fixture
def started() -> Iterator[list[Worker]]:
    running: list[Worker] = []
    yield running
    for worker in running:
        worker.stop(timeout=10)


def make_worker(fake: FakeBroker, started: list[Worker], credit: int = 1, **options: Any) -> tuple[Worker, list]:
    calls: list[dict[str, Any]] = []
    worker = Worker(fake.endpoint, "svc", credit=credit, **{"heartbeat_interval": 0.2, "liveness": 3, **options})

    @worker.command("echo")
    def echo(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        calls.append(envelope)
        return {"echo": parameters}

    worker.start()
    started.append(worker)
    return worker, calls


def test_ready_is_plain_mdp_without_credit(fake: FakeBroker, started: list[Worker]) -> None:
    make_worker(fake, started)
    frames = fake.recv()
    assert frames[1:] == [b"", MDPW01, READY, b"svc"]


def test_ready_declares_credit_and_asks_for_batched_delivery(fake: FakeBroker, started: list[Worker]) -> None:
    make_worker(fake, started, credit=4)
    frames = fake.recv()
    assert frames[1:] == [b"", MDPW01, READY, b"svc", credit_frame(4), BATCHED]


@pytest.mark.parametrize(("delivery", "words"), [("mdp", []), ("packed", [PACKED]), ("batched", [BATCHED])])
def test_ready_asks_for_the_delivery_chosen(
    fake: FakeBroker, started: list[Worker], delivery: str, words: list[bytes]
) -> None:
    make_worker(fake, started, credit=4, delivery=delivery)
    frames = fake.recv()
    assert frames[1:] == [b"", MDPW01, READY, b"svc", credit_frame(4), *words]


def test_an_unknown_delivery_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="delivery must be one of mdp, packed, batched"):
        Worker("tcp://127.0.0.1:1", "svc", credit=2, delivery="bulk")


def test_packed_request_gets_a_packed_reply(fake: FakeBroker, started: list[Worker]) -> None:
    worker, calls = make_worker(fake, started, credit=2, delivery="packed")
    identity = fake.recv()[0]
    body = env.encode(build_request("svc", "echo", {"x": 2}, 5, 0))

    fake.sock.send_multipart([identity, b"TOKEN-01" + body])
    reply = fake.recv()

    assert len(reply) == 2 and reply[1][:8] == b"TOKEN-01", reply
    assert env.decode(reply[1][8:])["payload"] == {"status": "success", "result": {"echo": {"x": 2}}}
    assert len(calls) == 1


def test_batched_worker_answers_an_mdp_request_in_mdp_form(fake: FakeBroker, started: list[Worker]) -> None:
    """A broker that knows nothing of batched delivery ignores the READY's extra frames and
    speaks plain MDP: the worker must answer it in kind."""
    make_worker(fake, started, credit=2)
    identity = fake.recv()[0]
    body = env.encode(build_request("svc", "echo", {"x": 3}, 5, 0))

    fake.send(identity, REQUEST, b"client-c", b"", body)
    reply = fake.recv()

    assert reply[:6] == [identity, b"", MDPW01, REPLY, b"client-c", b""]
    assert env.decode(reply[6])["payload"]["result"] == {"echo": {"x": 3}}


def test_batched_request_too_short_for_a_token_is_dropped(fake: FakeBroker, started: list[Worker]) -> None:
    worker, calls = make_worker(fake, started, credit=2)
    identity = fake.recv()[0]
    fake.sock.send_multipart([identity, b"short"])
    body = env.encode(build_request("svc", "echo", {"x": 4}, 5, 0))
    fake.sock.send_multipart([identity, b"TOKEN-02" + body])

    reply = fake.recv()  # the next message is the answer to the good request: the short one got none
    assert reply[1][:8] == b"TOKEN-02" and len(calls) == 1


def test_every_request_of_a_batch_is_answered(fake: FakeBroker, started: list[Worker]) -> None:
    worker, calls = make_worker(fake, started, credit=3)
    identity = fake.recv()[0]
    tokens = [f"TOKEN-1{i}".encode() for i in range(3)]
    bodies = [env.encode(build_request("svc", "echo", {"x": i}, 5, 0)) for i in range(3)]

    fake.sock.send_multipart([identity, *(token + body for token, body in zip(tokens, bodies))])
    answers: dict[bytes, dict[str, Any]] = {}
    while len(answers) < 3:  # replies finished together share a message; the split is up to timing
        for frame in fake.recv()[1:]:
            answers[frame[:8]] = env.decode(frame[8:])["payload"]

    assert answers == {token: {"status": "success", "result": {"echo": {"x": i}}} for i, token in enumerate(tokens)}
    assert len(calls) == 3


def test_replies_ready_together_leave_in_one_batch(fake: FakeBroker, started: list[Worker]) -> None:
    """Duplicates of an answered request are all answered from the cache while their message is
    read, so their replies are ready together: one message, a frame each, in request order."""
    worker, calls = make_worker(fake, started, credit=3)
    identity = fake.recv()[0]
    body = env.encode(build_request("svc", "echo", {"x": 9}, 5, 0))
    fake.sock.send_multipart([identity, b"TOKEN-20" + body])
    first = fake.recv()

    fake.sock.send_multipart([identity, b"TOKEN-21" + body, b"TOKEN-22" + body, b"TOKEN-23" + body])
    again = fake.recv()

    assert [frame[:8] for frame in again[1:]] == [b"TOKEN-21", b"TOKEN-22", b"TOKEN-23"]
    assert {frame[8:] for frame in again[1:]} == {first[1][8:]}
    assert len(calls) == 1 and worker.duplicates == 3


def test_batched_worker_answers_with_several_frames_in_mdp_form(fake: FakeBroker, started: list[Worker]) -> None:
    """A batch frame holds one body frame: a reply of two goes as an MDP REPLY to the token."""
    worker = Worker(fake.endpoint, "svc", credit=2, heartbeat_interval=0.2)

    @worker.raw
    def split(frames: list[bytes]) -> list[bytes]:
        return [frames[0][:2], frames[0][2:]]

    worker.start()
    started.append(worker)
    identity = fake.recv()[0]
    fake.sock.send_multipart([identity, b"TOKEN-30" + b"abcd"])

    assert fake.recv() == [identity, b"", MDPW01, REPLY, b"TOKEN-30", b"", b"ab", b"cd"]


def test_heartbeats_flow(fake: FakeBroker, started: list[Worker]) -> None:
    make_worker(fake, started)
    identity = fake.recv()[0]
    beat = fake.recv(skip_heartbeats=False)
    assert beat == [identity, b"", MDPW01, HEARTBEAT]


def test_request_reply_frames_and_duplicates(fake: FakeBroker, started: list[Worker]) -> None:
    worker, calls = make_worker(fake, started)
    identity = fake.recv()[0]
    body = env.encode(build_request("svc", "echo", {"x": 1}, 5, 0))

    fake.send(identity, REQUEST, b"client-a", b"", body)
    first = fake.recv()
    fake.send(identity, REQUEST, b"client-b", b"", body)  # the same messageId again
    second = fake.recv()

    assert first[:6] == [identity, b"", MDPW01, REPLY, b"client-a", b""]
    assert second[:6] == [identity, b"", MDPW01, REPLY, b"client-b", b""]
    assert first[6] == second[6]
    assert env.decode(first[6])["payload"] == {"status": "success", "result": {"echo": {"x": 1}}}
    assert len(calls) == 1 and worker.duplicates == 1


def test_disconnect_makes_the_worker_register_again_on_a_new_socket(fake: FakeBroker, started: list[Worker]) -> None:
    worker, _ = make_worker(fake, started)
    identity = fake.recv()[0]
    fake.send(identity, DISCONNECT)
    again = fake.recv()
    assert again[1:] == [b"", MDPW01, READY, b"svc"]
    assert again[0] != identity
    assert worker.connections == 2


def test_silent_broker_triggers_reconnect(fake: FakeBroker, started: list[Worker]) -> None:
    make_worker(fake, started, heartbeat_interval=0.1, liveness=2)
    first = fake.recv()
    again = fake.recv()  # no word from us for liveness intervals: a fresh READY
    assert again[1:] == [b"", MDPW01, READY, b"svc"] and again[0] != first[0]


def test_stop_sends_disconnect(fake: FakeBroker, started: list[Worker]) -> None:
    worker, _ = make_worker(fake, started)
    identity = fake.recv()[0]
    worker.stop()
    assert fake.recv() == [identity, b"", MDPW01, DISCONNECT]


def test_a_stopping_worker_heartbeats_while_it_finishes_what_it_holds(fake: FakeBroker, started: list[Worker]) -> None:
    """Finishing a slow request takes several heartbeat intervals: silence that long would make
    the broker take the worker for dead and give the request to another, which would run it again.
    The request is held until the stopping worker has heartbeated for longer than its liveness."""
    held_beats = 5  # more than liveness: a silent worker would have been taken for dead
    handling, release = threading.Event(), threading.Event()

    def slow(frames: list[bytes]) -> list[bytes]:
        handling.set()
        release.wait(RECV_MS / 1000)
        return frames

    worker = Worker(fake.endpoint, "svc", heartbeat_interval=0.1, liveness=3)
    worker.raw(slow)
    worker.start()
    started.append(worker)
    identity = fake.recv()[0]
    fake.send(identity, REQUEST, b"client-a", b"", b"slow")
    assert handling.wait(RECV_MS / 1000), "the request never reached the handler"
    worker.stop(timeout=0)  # stopping from here on, with the request in hand
    seen: list[bytes] = []
    while seen.count(HEARTBEAT) < held_beats and len(seen) < 40:
        seen.append(fake.recv(skip_heartbeats=False)[3])
    release.set()
    while DISCONNECT not in seen and len(seen) < 40:
        seen.append(fake.recv(skip_heartbeats=False)[3])
    assert seen[-2:] == [REPLY, DISCONNECT], seen
    assert len(seen) - 2 >= held_beats and set(seen[:-2]) == {HEARTBEAT}, seen
