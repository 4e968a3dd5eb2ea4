"""The broker against ZeroMQ RFC 7 (MDP/0.1) and RFC 8 (MMI), frame by frame, with raw DEALER sockets.

Nothing here uses the SDK for the conversation under test: each test writes the frames of the
RFC's tables itself and reads back exactly what the broker sends, so a mistake shared by the
broker and the SDK cannot hide. The SDK client is used only for bookkeeping questions
(``mmi.service``, ``arbiter.status``). Every wait is bounded; timing is only ever asserted as
"within a generous bound", never as an exact interval.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from datetime import timedelta
from typing import Any, Iterator

import broker_helpers
import orjson
import pytest
import zmq
from test_sdk_harness import HEARTBEAT_S, LIVENESS, Broker, launch_broker, wait_for

from arbiter.sdk.client import Client
from arbiter.wire import envelope as env
from arbiter.wire.mdp import BATCHED, DISCONNECT, HEARTBEAT, MDPC01, MDPW01, PACKED, READY, REPLY, REQUEST, TOKEN_BYTES

pytestmark = pytest.mark.e2e

WAIT_S = 10.0  # the longest any single expected message may take
QUIET_S = 1.0  # how long "nothing arrives" is watched for
EXPIRY_S = HEARTBEAT_S * LIVENESS  # silence after which the broker drops a worker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from launch_broker(tmp_path_factory.mktemp("conformance"))


@pytest.fixture
def sockets() -> Iterator[list[zmq.Socket]]:
    """Every raw socket a test opens, closed afterwards whatever happened."""
    opened: list[zmq.Socket] = []
    yield opened
    for sock in opened:
        sock.close(linger=0)


@pytest.fixture
def client(broker: Broker) -> Iterator[Client]:
    with Client(broker.frontend, timeout=5, retries=1) as c:
        yield c


def unique(prefix: str) -> str:
    """Tests share one broker; distinct service names keep them from seeing each other's traffic."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def dealer(broker: Broker, sockets: list[zmq.Socket]) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.frontend)
    sockets.append(sock)
    return sock


def recv(sock: zmq.Socket, timeout: float = WAIT_S) -> list[bytes]:
    assert sock.poll(int(timeout * 1000)), f"nothing received within {timeout}s"
    return sock.recv_multipart()


def quiet(sock: zmq.Socket, timeout: float = QUIET_S) -> bool:
    return not sock.poll(int(timeout * 1000))


class RawWorker:
    """A worker made of one DEALER and the RFC 7 worker frames, nothing else.

    While it waits it sends HEARTBEAT every interval (so the broker keeps it) unless it was
    told to be ``silent``, and it skips the broker's HEARTBEATs unless asked for them.
    """

    def __init__(self, broker: Broker, sockets: list[zmq.Socket]) -> None:
        self.sock = dealer(broker, sockets)
        self.silent = False
        self.inbox: deque[list[bytes]] = deque()  # messages read while looking at several workers
        self._next_beat = time.monotonic() + HEARTBEAT_S

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart([b"", MDPW01, *frames])

    def ready(self, service: str, credit: int | None = None, packed: bool = False, batched: bool = False) -> None:
        word = BATCHED if batched else PACKED if packed else None
        options = [str(credit or 1).encode(), word] if word else [str(credit).encode()] if credit else []
        self.send(READY, service.encode(), *options)

    def reply(self, address: bytes, *body: bytes) -> None:
        self.send(REPLY, address, b"", *body)

    def _beat(self) -> None:
        if not self.silent and time.monotonic() >= self._next_beat:
            self.send(HEARTBEAT)
            self._next_beat = time.monotonic() + HEARTBEAT_S

    def recv(self, timeout: float = WAIT_S, heartbeats: bool = False) -> list[bytes] | None:
        """The next broker message (None when the time is up), heartbeating meanwhile."""
        if self.inbox:
            return self.inbox.popleft()
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._beat()
            if not self.sock.poll(int(min(remaining, HEARTBEAT_S / 2) * 1000) + 1):
                continue
            frames = self.sock.recv_multipart()
            if heartbeats or frames != [b"", MDPW01, HEARTBEAT]:
                return frames
        return None

    def has_message(self) -> bool:
        """Without blocking: is a non-heartbeat message waiting? (It stays for :meth:`recv`.)"""
        if not self.inbox:
            frames = self.recv(0.001)
            if frames is not None:
                self.inbox.append(frames)
        return bool(self.inbox)

    def expect(self, timeout: float = WAIT_S) -> list[bytes]:
        frames = self.recv(timeout)
        assert frames is not None, f"the worker received nothing within {timeout}s"
        return frames

    def request(self, timeout: float = WAIT_S) -> tuple[bytes, list[bytes]]:
        """Wait for a REQUEST; returns (client address, body frames) after checking its frames."""
        frames = self.expect(timeout)
        assert frames[:3] == [b"", MDPW01, REQUEST], frames
        assert len(frames) >= 5 and frames[4] == b"", frames
        return frames[3], frames[5:]

    def packed_request(self, timeout: float = WAIT_S) -> tuple[bytes, list[bytes]]:
        """Wait for a packed REQUEST (§5.1 of docs/PROTOCOL.md); returns (token, body frames)."""
        frames = self.expect(timeout)
        assert frames[0] and len(frames[0]) >= TOKEN_BYTES, frames
        return frames[0][:TOKEN_BYTES], [frames[0][TOKEN_BYTES:], *frames[1:]]

    def packed_reply(self, token: bytes, first: bytes, *more: bytes) -> None:
        self.sock.send_multipart([token + first, *more])

    def batch(self, timeout: float = WAIT_S) -> list[tuple[bytes, bytes]]:
        """Wait for a batched message (§5.2 of docs/PROTOCOL.md); returns (token, body) per frame."""
        frames = self.expect(timeout)
        assert all(len(frame) >= TOKEN_BYTES for frame in frames), frames
        return [(frame[:TOKEN_BYTES], frame[TOKEN_BYTES:]) for frame in frames]

    def keep_alive(self, seconds: float) -> list[list[bytes]]:
        """Heartbeat for ``seconds``; returns whatever non-heartbeat messages arrived."""
        got: list[list[bytes]] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            frames = self.recv(remaining)
            if frames is not None:
                got.append(frames)
        return got


class RawClient:
    """A client made of one DEALER and the RFC 7 client frames."""

    def __init__(self, broker: Broker, sockets: list[zmq.Socket]) -> None:
        self.sock = dealer(broker, sockets)

    def send(self, service: str | bytes, *body: bytes) -> None:
        name = service.encode() if isinstance(service, str) else service
        self.sock.send_multipart([b"", MDPC01, name, *body])

    def recv(self, timeout: float = WAIT_S) -> list[bytes]:
        return recv(self.sock, timeout)


def registered(client: Client, service: str) -> bool:
    return client.mmi(service, timeout=2) == "200"


def start_worker(broker: Broker, sockets: list[zmq.Socket], client: Client, service: str, **ready: Any) -> RawWorker:
    """READY, then wait (bounded) until the broker says the service has a worker."""
    worker = RawWorker(broker, sockets)
    worker.ready(service, **ready)
    assert wait_for(lambda: registered(client, service), timeout=WAIT_S), f"{service} never registered"
    return worker


def status(client: Client) -> dict[str, Any]:
    reply = client.call("arbiter.status", "status")
    assert reply.ok, reply.error
    return reply.result


def queued(client: Client, service: str) -> int:
    return status(client)["services"].get(service, {}).get("queued", 0)


def dropped(client: Client) -> dict[str, int]:
    return dict(status(client)["counters"]["dropped"])


def error_of(frames: list[bytes], service: str) -> dict[str, Any]:
    """The broker's error envelope in a client REPLY, after checking the REPLY frames."""
    assert frames[:3] == [b"", MDPC01, service.encode()], frames
    assert len(frames) == 4, frames
    reply = orjson.loads(frames[3])
    assert reply["messageType"] == "response" and reply["source"] == "arbiter", reply
    assert reply["payload"]["status"] == "error", reply
    return reply


# -- the request/reply path (RFC 7 §"Opening and Closing a Connection", "Request and Reply") --


def test_request_reaches_worker_with_address_and_reply_reaches_client(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    service = unique("conf-echo")
    worker = start_worker(broker, sockets, client, service)
    caller = RawClient(broker, sockets)

    caller.send(service, b"part-1", b"part-2")  # a body of two frames travels as two frames
    address, body = worker.request()
    worker.reply(address, b"answer-1", b"answer-2")

    assert address and body == [b"part-1", b"part-2"]
    assert caller.recv() == [b"", MDPC01, service.encode(), b"answer-1", b"answer-2"]


def test_req_socket_client(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    """RFC 7 allows REQ clients: the socket writes and strips the empty frame itself."""
    service = unique("conf-req")
    worker = start_worker(broker, sockets, client, service)
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(broker.frontend)
    sockets.append(req)

    req.send_multipart([MDPC01, service.encode(), b"ping"])
    address, body = worker.request()
    worker.reply(address, b"pong")

    assert body == [b"ping"]
    assert recv(req) == [MDPC01, service.encode(), b"pong"]


def test_replies_go_to_the_client_that_asked(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-two")
    worker = start_worker(broker, sockets, client, service, credit=2)
    first, second = RawClient(broker, sockets), RawClient(broker, sockets)

    first.send(service, b"from-first")
    second.send(service, b"from-second")
    held = dict((body[0], address) for address, body in (worker.request(), worker.request()))
    worker.reply(held[b"from-second"], b"to-second")
    worker.reply(held[b"from-first"], b"to-first")

    assert first.recv() == [b"", MDPC01, service.encode(), b"to-first"]
    assert second.recv() == [b"", MDPC01, service.encode(), b"to-second"]


def test_request_waits_for_a_worker(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-late")
    caller = RawClient(broker, sockets)
    caller.send(service, b"early")
    assert wait_for(lambda: queued(client, service) == 1, timeout=WAIT_S), "the request was not queued"
    assert quiet(caller.sock, 0), "the broker answered a request for a service nobody serves yet"

    worker = RawWorker(broker, sockets)
    worker.ready(service)
    address, body = worker.request()
    worker.reply(address, b"served late")

    assert body == [b"early"]
    assert caller.recv() == [b"", MDPC01, service.encode(), b"served late"]


def test_least_recently_used_worker_gets_the_next_request(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """Three workers, six requests one after another: each round visits every worker in the same order."""
    service = unique("conf-lru")
    workers = [start_worker(broker, sockets, client, service) for _ in range(3)]
    caller = RawClient(broker, sockets)
    order: list[int] = []
    for n in range(6):
        caller.send(service, str(n).encode())
        index = _serving(workers)
        order.append(index)
        address, body = workers[index].request()
        assert body == [str(n).encode()]
        workers[index].reply(address, body[0])
        assert caller.recv()[3] == body[0]

    assert not any(w.has_message() for w in workers), "a request was handed to two workers"
    assert sorted(order[:3]) == [0, 1, 2], order
    assert order[3:] == order[:3], f"not least-recently-used: {order}"


def _serving(workers: list[RawWorker]) -> int:
    """The index of the worker that was handed the request (all of them heartbeat while we look)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for index, worker in enumerate(workers):
            if worker.has_message():
                return index
        time.sleep(0.005)  # the pace of this bounded poll over the workers
    raise AssertionError(f"no worker received the request within {WAIT_S}s")


# -- credit extension --------------------------------------------------------------------


def test_credit_lets_a_worker_hold_several_requests(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-credit")
    worker = start_worker(broker, sockets, client, service, credit=3)
    caller = RawClient(broker, sockets)
    for n in range(4):
        caller.send(service, f"job-{n}".encode())

    held = [worker.request() for _ in range(3)]  # three before any reply
    assert wait_for(lambda: queued(client, service) == 1, timeout=WAIT_S), "the fourth request is not waiting"
    assert not worker.has_message(), "a worker with credit 3 was handed a fourth request"
    worker.reply(held[0][0], b"done-" + held[0][1][0])
    fourth = worker.request()  # the reply freed one unit of credit
    for address, body in [*held[1:], fourth]:
        worker.reply(address, b"done-" + body[0])

    assert sorted(body[0] for _, body in [*held, fourth]) == [b"job-0", b"job-1", b"job-2", b"job-3"]
    replies = sorted(caller.recv()[3] for _ in range(4))
    assert replies == [b"done-job-0", b"done-job-1", b"done-job-2", b"done-job-3"]


def test_without_credit_a_worker_holds_one_request(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-plain")
    worker = start_worker(broker, sockets, client, service)
    caller = RawClient(broker, sockets)
    caller.send(service, b"one")
    caller.send(service, b"two")

    first = worker.request()
    assert wait_for(lambda: queued(client, service) == 1, timeout=WAIT_S), "the second request is not waiting"
    assert not worker.has_message(), "a plain MDP worker was handed a second request before replying"
    worker.reply(first[0], b"1")
    second = worker.request()
    worker.reply(second[0], b"2")

    assert [first[1], second[1]] == [[b"one"], [b"two"]]
    assert sorted(caller.recv()[3] for _ in range(2)) == [b"1", b"2"]


def test_packed_worker_gets_requests_without_the_preamble(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    service = unique("conf-packed")
    worker = start_worker(broker, sockets, client, service, credit=2, packed=True)
    caller = RawClient(broker, sockets)

    caller.send(service, b"part-1", b"part-2")
    token, body = worker.packed_request()
    assert body == [b"part-1", b"part-2"]
    assert status(client)["services"][service]["packedWorkers"] == 1
    worker.packed_reply(token, b"answer-1", b"answer-2")

    assert caller.recv() == [b"", MDPC01, service.encode(), b"answer-1", b"answer-2"]


def test_packed_worker_gets_an_empty_request_in_mdp_form(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """With no body frame there is nothing to glue the token to: the MDP form, answered in kind."""
    service = unique("conf-packed-empty")
    worker = start_worker(broker, sockets, client, service, credit=2, packed=True)
    caller = RawClient(broker, sockets)

    caller.send(service)
    address, body = worker.request()
    worker.reply(address)

    assert body == []
    assert caller.recv() == [b"", MDPC01, service.encode()]


def test_garbled_packed_reply_drops_the_worker_and_hands_its_request_on(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    service = unique("conf-packed-garbled")
    garbling = start_worker(broker, sockets, client, service, credit=2, packed=True)
    caller = RawClient(broker, sockets)
    before = dropped(client).get("malformed-reply", 0)

    caller.send(service, b"job")
    garbling.packed_request()
    garbling.sock.send_multipart([b"abc"])  # shorter than a token
    assert garbling.expect() == [b"", MDPW01, DISCONNECT]
    assert dropped(client).get("malformed-reply", 0) == before + 1

    staying = RawWorker(broker, sockets)
    staying.ready(service, credit=2, packed=True)
    token, body = staying.packed_request()
    staying.packed_reply(token, b"done")
    assert body == [b"job"]
    assert caller.recv() == [b"", MDPC01, service.encode(), b"done"]


def test_batched_worker_gets_a_burst_in_one_message_and_answers_in_one(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """Requests that wait for a worker leave together when it comes: one frame each."""
    service = unique("conf-batched")
    caller = RawClient(broker, sockets)
    for job in (b"job-1", b"job-2", b"job-3"):
        caller.send(service, job)
    assert wait_for(lambda: queued(client, service) == 3, timeout=WAIT_S)  # before any worker is there
    worker = RawWorker(broker, sockets)
    worker.ready(service, credit=3, batched=True)

    items = worker.batch()
    assert [body for _, body in items] == [b"job-1", b"job-2", b"job-3"]
    assert len({token for token, _ in items}) == 3
    assert status(client)["services"][service]["batchedWorkers"] == 1
    worker.sock.send_multipart([token + body.replace(b"job", b"done") for token, body in reversed(items)])

    replies = [caller.recv() for _ in items]
    assert [frames[3] for frames in replies] == [b"done-3", b"done-2", b"done-1"]
    assert all(frames[:3] == [b"", MDPC01, service.encode()] and len(frames) == 4 for frames in replies)


def test_batched_worker_gets_a_request_of_several_frames_in_mdp_form(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """A batch frame holds one body frame; other bodies take the MDP form both ways."""
    service = unique("conf-batched-multi")
    worker = start_worker(broker, sockets, client, service, credit=2, batched=True)
    caller = RawClient(broker, sockets)

    caller.send(service, b"part-1", b"part-2")
    address, body = worker.request()
    worker.reply(address, b"answer-1", b"answer-2")

    assert body == [b"part-1", b"part-2"]
    assert caller.recv() == [b"", MDPC01, service.encode(), b"answer-1", b"answer-2"]


def test_garbled_batch_is_refused_whole_and_its_requests_handed_on(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """One frame too short to hold a token: no reply of that message is taken (none could be
    trusted), the worker is dropped, and both requests are served by the next worker."""
    service = unique("conf-batched-garbled")
    caller = RawClient(broker, sockets)
    caller.send(service, b"job-1")
    caller.send(service, b"job-2")
    assert wait_for(lambda: queued(client, service) == 2, timeout=WAIT_S)
    garbling = RawWorker(broker, sockets)
    before = dropped(client).get("malformed-reply", 0)
    garbling.ready(service, credit=2, batched=True)
    (first, _), _ = garbling.batch()
    garbling.sock.send_multipart([first + b"done-1", b"abc"])
    assert garbling.expect() == [b"", MDPW01, DISCONNECT]
    assert dropped(client).get("malformed-reply", 0) == before + 1

    staying = RawWorker(broker, sockets)
    staying.ready(service, credit=2, batched=True)
    items = staying.batch()
    staying.sock.send_multipart([token + body + b"-done" for token, body in items])
    assert sorted(body for _, body in items) == [b"job-1", b"job-2"]
    assert sorted(caller.recv()[3] for _ in items) == [b"job-1-done", b"job-2-done"]
    assert quiet(caller.sock)  # and nothing from the garbled message


def test_packed_message_from_a_plain_worker_is_dropped(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """Only a worker that asked for packed delivery may leave out the delimiter."""
    service = unique("conf-not-packed")
    worker = start_worker(broker, sockets, client, service, credit=2)
    caller = RawClient(broker, sockets)
    before = dropped(client).get("too-few-frames", 0)

    caller.send(service, b"job")
    address, _ = worker.request()
    worker.sock.send_multipart([address + b"done"])  # to MDP, a message of one frame
    assert wait_for(lambda: dropped(client).get("too-few-frames", 0) > before, timeout=WAIT_S)
    worker.reply(address, b"done")
    assert caller.recv() == [b"", MDPC01, service.encode(), b"done"]


# -- heartbeats and liveness ----------------------------------------------------------------


def test_broker_heartbeats_an_idle_worker(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    worker = start_worker(broker, sockets, client, unique("conf-beat"))
    for _ in range(3):  # one after another; the bound only catches a broker that stopped beating
        assert worker.recv(WAIT_S, heartbeats=True) == [b"", MDPW01, HEARTBEAT]


@pytest.mark.perf
def test_broker_heartbeats_at_the_configured_interval(
    broker: Broker, sockets: list[zmq.Socket], client: Client, record_property
) -> None:
    worker = start_worker(broker, sockets, client, unique("conf-beat-interval"))
    window = 3.0  # the measurement's span: heartbeats are counted over it
    beats: list[float] = []
    deadline = time.monotonic() + window
    while (remaining := deadline - time.monotonic()) > 0:
        frames = worker.recv(remaining, heartbeats=True)
        if frames is not None:
            assert frames == [b"", MDPW01, HEARTBEAT], frames
            beats.append(time.monotonic())

    expected = window / HEARTBEAT_S
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    record_property("heartbeats", len(beats))
    record_property("max_gap_s", round(max(gaps, default=window), 3))
    assert expected / 2 <= len(beats) <= expected * 2, f"{len(beats)} heartbeats in {window}s at {HEARTBEAT_S}s"
    assert max(gaps) < HEARTBEAT_S * 3, gaps


def test_heartbeating_worker_stays_registered(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-alive")
    worker = start_worker(broker, sockets, client, service)
    assert worker.keep_alive(EXPIRY_S * 2) == []  # the time passing is the point: twice the expiry
    assert registered(client, service)


def test_silent_worker_is_dropped_and_its_request_redelivered(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    service = unique("conf-silent")
    quitter = start_worker(broker, sockets, client, service)
    caller = RawClient(broker, sockets)
    caller.send(service, b"survives")
    _, body = quitter.request()
    assert body == [b"survives"]

    quitter.silent = True  # from now on: no replies, no heartbeats
    backup = RawWorker(broker, sockets)
    backup.ready(service)
    address, again = backup.request(timeout=EXPIRY_S + WAIT_S)
    backup.reply(address, b"rescued")

    assert again == [b"survives"]
    assert caller.recv() == [b"", MDPC01, service.encode(), b"rescued"]
    quitter.send(HEARTBEAT)  # the broker forgot it: an unknown worker's HEARTBEAT gets DISCONNECT
    assert quitter.expect() == [b"", MDPW01, DISCONNECT]


def test_silent_worker_is_unregistered(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-gone")
    worker = start_worker(broker, sockets, client, service)
    worker.silent = True
    assert wait_for(lambda: not registered(client, service), timeout=EXPIRY_S + WAIT_S), "the worker was kept"


def test_worker_heartbeat_is_answered_by_nothing_but_heartbeats(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """HEARTBEAT from a known worker is not an error: it gets no DISCONNECT."""
    worker = start_worker(broker, sockets, client, unique("conf-hb"))
    worker.send(HEARTBEAT)
    assert worker.recv(QUIET_S) is None


# -- DISCONNECT ------------------------------------------------------------------------------


def test_disconnect_unregisters_the_worker(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-bye")
    worker = start_worker(broker, sockets, client, service)
    worker.send(DISCONNECT)
    assert wait_for(lambda: not registered(client, service), timeout=WAIT_S)


def test_disconnect_with_a_request_in_hand_hands_it_on(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    service = unique("conf-handover")
    leaving = start_worker(broker, sockets, client, service)
    caller = RawClient(broker, sockets)
    caller.send(service, b"unfinished")
    leaving.request()
    leaving.send(DISCONNECT)

    staying = RawWorker(broker, sockets)
    staying.ready(service)
    address, body = staying.request()
    staying.reply(address, b"finished")

    assert body == [b"unfinished"]
    assert caller.recv() == [b"", MDPC01, service.encode(), b"finished"]


# -- protocol errors that end a worker's connection -------------------------------------------


def test_second_ready_gets_disconnect(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-twice")
    worker = start_worker(broker, sockets, client, service)
    worker.ready(service)
    assert worker.expect() == [b"", MDPW01, DISCONNECT]
    assert wait_for(lambda: not registered(client, service), timeout=WAIT_S), "the worker was not forgotten"


@pytest.mark.parametrize("command", [REPLY, HEARTBEAT], ids=["reply", "heartbeat"])
def test_unknown_worker_gets_disconnect(broker: Broker, sockets: list[zmq.Socket], command: bytes) -> None:
    stranger = RawWorker(broker, sockets)
    stranger.silent = True
    if command == REPLY:
        stranger.reply(b"\x00\x00\x00\x01", b"an answer nobody asked for")
    else:
        stranger.send(HEARTBEAT)
    assert stranger.expect() == [b"", MDPW01, DISCONNECT]


@pytest.mark.parametrize("service", ["mmi.service", "mmi.custom", "arbiter.route", "arbiter.mine"])
def test_reserved_service_ready_gets_disconnect(
    broker: Broker, sockets: list[zmq.Socket], client: Client, service: str
) -> None:
    worker = RawWorker(broker, sockets)
    worker.silent = True
    worker.ready(service)
    assert worker.expect() == [b"", MDPW01, DISCONNECT]


@pytest.mark.parametrize("options", [[b"2", b"compact"], [b"2", PACKED, b"more"], [PACKED]])
def test_bad_ready_option_gets_disconnect(
    broker: Broker, sockets: list[zmq.Socket], client: Client, options: list[bytes]
) -> None:
    service = unique("conf-badoption")
    worker = RawWorker(broker, sockets)
    worker.silent = True
    worker.send(READY, service.encode(), *options)
    assert worker.expect() == [b"", MDPW01, DISCONNECT]
    assert not registered(client, service)


@pytest.mark.parametrize("credit", [b"0", b"three", b"-1", b"100000"])
def test_bad_credit_gets_disconnect(broker: Broker, sockets: list[zmq.Socket], client: Client, credit: bytes) -> None:
    service = unique("conf-badcredit")
    worker = RawWorker(broker, sockets)
    worker.silent = True
    worker.send(READY, service.encode(), credit)
    assert worker.expect() == [b"", MDPW01, DISCONNECT]
    assert not registered(client, service)


# -- malformed messages: dropped, counted, and the broker carries on -----------------------------

MALFORMED = {
    "unknown-command": [b"", MDPW01, b"\x09"],
    "bad-header": [b"", b"MDPX01", b"conf-x", b"body"],
    "missing-delimiter": [MDPC01, b"conf-x", b"body"],
    "too-few-frames": [b"", MDPC01],
    "non-utf8": [b"", MDPC01, b"\xff\xfe-conf", b"body"],
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_malformed_message_is_dropped_and_counted(
    broker: Broker, sockets: list[zmq.Socket], client: Client, reason: str
) -> None:
    before = dropped(client).get(reason, 0)
    sender = dealer(broker, sockets)
    sender.send_multipart(MALFORMED[reason])

    assert wait_for(lambda: dropped(client).get(reason, 0) > before, timeout=WAIT_S), (
        f"no '{reason}' drop counted; dropped = {dropped(client)}"
    )
    assert client.mmi("arbiter.route", timeout=2) == "200", "the broker stopped serving"


def test_malformed_messages_do_not_disturb_a_conversation(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    service = unique("conf-robust")
    worker = start_worker(broker, sockets, client, service)
    caller = RawClient(broker, sockets)
    noise = dealer(broker, sockets)
    for frames in MALFORMED.values():
        noise.send_multipart(frames)
    caller.send(service, b"still there?")
    address, body = worker.request()
    worker.reply(address, b"yes")
    assert caller.recv() == [b"", MDPC01, service.encode(), b"yes"]


# -- MMI (RFC 8) ------------------------------------------------------------------------------------


def test_mmi_service(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-mmi")
    start_worker(broker, sockets, client, service)
    caller = RawClient(broker, sockets)

    caller.send("mmi.service", service.encode())
    found = caller.recv()
    caller.send("mmi.service", unique("conf-nobody").encode())
    missing = caller.recv()
    caller.send("mmi.nonsense", b"anything")
    unknown = caller.recv()

    assert found == [b"", MDPC01, b"mmi.service", b"200"]
    assert missing == [b"", MDPC01, b"mmi.service", b"404"]
    assert unknown == [b"", MDPC01, b"mmi.nonsense", b"501"]


# -- the broker's error replies ----------------------------------------------------------------------


def test_unknown_arbiter_service(broker: Broker, sockets: list[zmq.Socket]) -> None:
    caller = RawClient(broker, sockets)
    request = env.new_request("arbiter.nothing", "status")
    caller.send("arbiter.nothing", env.encode(request))
    reply = error_of(caller.recv(), "arbiter.nothing")
    assert reply["payload"]["error"]["code"] == "UNKNOWN_SERVICE"
    assert reply["correlationId"] == request["messageId"]


@pytest.mark.parametrize("body", [b"not json", b'["a", "list"]'], ids=["text", "json-list"])
def test_arbiter_services_need_an_envelope(broker: Broker, sockets: list[zmq.Socket], body: bytes) -> None:
    caller = RawClient(broker, sockets)
    caller.send("arbiter.status", body)
    assert error_of(caller.recv(), "arbiter.status")["payload"]["error"]["code"] == "BAD_ENVELOPE"


def test_queued_envelope_expires(broker: Broker, sockets: list[zmq.Socket]) -> None:
    service = unique("conf-expire")
    request = env.new_request(service, "anything", timeout_ms=800)
    caller = RawClient(broker, sockets)
    caller.send(service, env.encode(request))
    reply = error_of(caller.recv(timeout=WAIT_S), service)
    assert reply["payload"]["error"]["code"] == "EXPIRED"
    assert reply["correlationId"] == request["messageId"]


def test_expiry_is_read_from_metadata(broker: Broker, sockets: list[zmq.Socket]) -> None:
    """An envelope already past its expiresAt is not delivered to a worker arriving later."""
    service = unique("conf-stale")
    request = env.new_request(service, "anything")
    request["metadata"]["expiresAt"] = env.iso(env.utc_now() - timedelta(seconds=1))
    caller = RawClient(broker, sockets)
    caller.send(service, env.encode(request))
    assert error_of(caller.recv(), service)["payload"]["error"]["code"] == "EXPIRED"


@pytest.mark.parametrize("frames", [1, 4], ids=["one-frame", "four-frames"])
def test_too_large(broker: Broker, sockets: list[zmq.Socket], client: Client, frames: int) -> None:
    limit = status(client)["limits"]["maxMessageBytes"]
    service = unique("conf-big")
    caller = RawClient(broker, sockets)
    size = limit // frames + 1
    caller.send(service, *[b"x" * size] * frames)
    assert error_of(caller.recv(), service)["payload"]["error"]["code"] == "TOO_LARGE"


def test_status_reports_services(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-status")
    worker = start_worker(broker, sockets, client, service, credit=2)
    caller = RawClient(broker, sockets)
    caller.send(service, b"held")
    address, _ = worker.request()

    result = status(client)
    worker.reply(address, b"done")
    caller.recv()

    assert result["services"][service]["workers"] == 1
    assert result["services"][service]["inflight"] == 1
    assert result["services"][service]["queued"] == 0
    assert result["services"][service]["credit"] == 2 and result["services"][service]["requests"] == 1
    assert all(isinstance(count, int) and count > 0 for count in result["counters"]["dropped"].values())
    assert result["snapshot"]["plugins"] == 7 and result["snapshot"]["lastReloadOk"] is True


# -- limits (a broker of its own, with tiny limits) ---------------------------------------------------


@pytest.fixture(scope="module")
def small_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    limits = {"limits": {"client_inflight": 2, "service_queue": 3}}
    yield from launch_broker(tmp_path_factory.mktemp("conformance-limits"), limits)


def test_inflight_limit_per_client(small_broker: Broker, sockets: list[zmq.Socket]) -> None:
    service = unique("conf-inflight")
    caller = RawClient(small_broker, sockets)
    for n in range(3):
        caller.send(service, f"r{n}".encode())
    assert error_of(caller.recv(), service)["payload"]["error"]["code"] == "INFLIGHT_LIMIT"


def test_queue_full(small_broker: Broker, sockets: list[zmq.Socket]) -> None:
    service = unique("conf-queue")
    callers = [RawClient(small_broker, sockets) for _ in range(4)]
    with Client(small_broker.frontend, timeout=5, retries=1) as client:
        for index, caller in enumerate(callers[:3]):
            caller.send(service, f"r{index}".encode())
            assert wait_for(lambda n=index + 1: queued(client, service) == n, timeout=WAIT_S), f"r{index} not queued"
    assert not any(caller.sock.poll(0) for caller in callers), "a request the queue had room for was answered"
    callers[3].send(service, b"r3")
    assert error_of(callers[3].recv(), service)["payload"]["error"]["code"] == "QUEUE_FULL"


# -- events ------------------------------------------------------------------------------------------


def subscriber(broker: Broker, sockets: list[zmq.Socket], *topics: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(broker.events_sub)
    sockets.append(sock)
    return sock


def subscribed(broker: Broker, sockets: list[zmq.Socket], *topics: str) -> zmq.Socket:
    """A subscriber whose subscriptions the broker has applied (it lists them in its status):
    what the broker publishes before that never reaches it."""
    sock = broker_helpers.subscriber(zmq.Context.instance(), broker, *topics)
    sockets.append(sock)
    return sock


def publisher(broker: Broker, sockets: list[zmq.Socket]) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.events_pub)
    sockets.append(sock)
    return sock


def publish_until_heard(pub: zmq.Socket, sub: zmq.Socket, topic: str, payload: dict[str, Any]) -> list[bytes]:
    """PUB/SUB joins late (the slow-joiner problem): publish until the subscriber hears one. What
    else the subscription matches (the broker's own ``system/...`` events) is passed over."""
    event = env.encode({**env.new_request("*", "event"), "messageType": "event", "topic": topic, "payload": payload})
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        pub.send_multipart([topic.encode(), event])
        while sub.poll(200):
            frames = sub.recv_multipart()
            if orjson.loads(frames[1]).get("topic") == topic:
                return frames
    raise AssertionError(f"no event on {topic} within {WAIT_S}s")


def test_prefix_subscription(broker: Broker, sockets: list[zmq.Socket]) -> None:
    prefix = f"orchestration/{uuid.uuid4().hex[:8]}/"
    sub = subscriber(broker, sockets, prefix)
    frames = publish_until_heard(publisher(broker, sockets), sub, prefix + "task-complete", {"n": 1})
    assert frames[0] == (prefix + "task-complete").encode()
    assert orjson.loads(frames[1])["payload"] == {"n": 1}


@pytest.mark.parametrize(
    ("pattern", "topic"),
    [("plugin/*/events", "plugin/{id}/events"), ("system/**", "system/{id}/deep/health")],
    ids=["one-segment", "any-segments"],
)
def test_wildcard_subscription(broker: Broker, sockets: list[zmq.Socket], pattern: str, topic: str) -> None:
    concrete = topic.format(id=uuid.uuid4().hex[:8])
    sub = subscriber(broker, sockets, pattern)
    frames = publish_until_heard(publisher(broker, sockets), sub, concrete, {"ok": True})
    assert frames[0] == pattern.encode()
    assert orjson.loads(frames[1])["topic"] == concrete


def test_prefix_subscriber_sees_the_concrete_topic_once_and_pattern_copies_marked(
    broker: Broker, sockets: list[zmq.Socket]
) -> None:
    """libzmq filters by prefix, so a ``plugin/`` subscriber also matches the ``plugin/*/events``
    copy made for a wildcard subscriber (PROTOCOL.md §7): it gets the event once under its
    topic, and any copy carries the pattern in frame 0, which holds a ``*`` and so is recognisable."""
    tag = uuid.uuid4().hex[:8]
    topic = f"plugin/{tag}/events"
    wildcard = subscriber(broker, sockets, "plugin/*/events")
    plain = subscriber(broker, sockets, "plugin/")
    pub = publisher(broker, sockets)
    publish_until_heard(pub, wildcard, topic, {})
    publish_until_heard(pub, plain, f"plugin/{tag}/warm", {})
    marker = f'{{"marker": "{tag}"}}'.encode()
    pub.send_multipart([topic.encode(), marker])
    pub.send_multipart([f"plugin/{tag}/end".encode(), b"{}"])
    received: list[bytes] = []
    while plain.poll(int(WAIT_S * 1000)):
        frames = plain.recv_multipart()
        if frames[0] == f"plugin/{tag}/end".encode():
            break
        if frames[1] == marker:
            received.append(frames[0])
    assert received.count(topic.encode()) == 1, received
    assert all(frame == b"plugin/*/events" for frame in received if frame != topic.encode()), received


def test_single_star_stays_in_one_segment(broker: Broker, sockets: list[zmq.Socket]) -> None:
    tag = uuid.uuid4().hex[:8]
    sub = subscriber(broker, sockets, f"plugin/*/{tag}", f"plugin/{tag}-probe")
    pub = publisher(broker, sockets)
    publish_until_heard(pub, sub, f"plugin/{tag}-probe", {})  # both subscriptions are in place now
    pub.send_multipart([f"plugin/a/b/{tag}".encode(), b"{}"])
    pub.send_multipart([f"plugin/{tag}-probe".encode(), b"{}"])
    while sub.poll(2000):
        frames = sub.recv_multipart()
        assert frames[0] != f"plugin/*/{tag}".encode(), f"'*' matched across a '/': {frames}"
        if frames[0] == f"plugin/{tag}-probe".encode():
            break  # sent after the multi-segment topic, so that one would have come first


def test_worker_up_and_down_on_system_health(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    service = unique("conf-health")
    sub = subscribed(broker, sockets, "system/health")
    worker = start_worker(broker, sockets, client, service)
    worker.send(DISCONNECT)
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while "worker-down" not in seen and sub.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
        topic, body = sub.recv_multipart()[:2]
        event = orjson.loads(body)
        assert topic == b"system/health" and event["topic"] == "system/health"
        if event["payload"].get("service") == service:
            seen.append(event["payload"]["event"])
    assert seen == ["worker-up", "worker-down"]


def route_request(text: str, timeout_ms: int = 5000, **payload: Any) -> dict[str, Any]:
    request = env.new_request("arbiter.route", "route", timeout_ms=timeout_ms)
    request["payload"] = {"text": text, "files": [], **payload}
    return request


ROUTED_TEXT = "create a jira issue for the login bug and start work on it"


def test_routing_decision_event(broker: Broker, sockets: list[zmq.Socket]) -> None:
    sub = subscribed(broker, sockets, "routing/decision")
    caller = RawClient(broker, sockets)
    request = route_request(ROUTED_TEXT, timeout_ms=300)
    caller.send("arbiter.route", env.encode(request))
    assert sub.poll(int(WAIT_S * 1000)), "no routing/decision event"
    topic, body = sub.recv_multipart()[:2]
    event = orjson.loads(body)
    assert topic == b"routing/decision" and event["messageType"] == "event"
    assert event["topic"] == "routing/decision"
    assert event["payload"]["userInput"] == ROUTED_TEXT and "primaryPlugin" in event["payload"]


def test_explain_and_route(broker: Broker, sockets: list[zmq.Socket], client: Client) -> None:
    """``arbiter.explain`` names the plugin that fits and says no live worker serves it; once one
    does, it leads, and ``arbiter.route`` sends the request to its worker."""
    explained = client.request("arbiter.explain", route_request(ROUTED_TEXT))
    assert explained.ok, explained.error
    routing = explained.result["routingDecision"]
    assert routing["primaryPlugin"] is None and routing["unservedPlugins"], routing
    plugin = routing["unservedPlugins"][0]
    assert "no live worker serves it" in explained.result["explanation"]

    worker = start_worker(broker, sockets, client, plugin)
    again = client.request("arbiter.explain", route_request(ROUTED_TEXT))
    assert again.result["routingDecision"]["primaryPlugin"] == plugin
    caller = RawClient(broker, sockets)
    request = route_request(ROUTED_TEXT, parameters={"issueKey": "PROJ-1"}, collaborate=False)
    caller.send("arbiter.route", env.encode(request))
    address, dispatched = _request_with_id(worker, request["messageId"])
    worker.reply(address, env.encode(env.success_reply(dispatched, plugin, {"handled": dispatched["payload"]})))
    reply = orjson.loads(caller.recv()[3])
    worker.send(DISCONNECT)

    assert dispatched["messageId"] == request["messageId"] and dispatched["destination"] == plugin
    assert dispatched["payload"]["parameters"] == {"issueKey": "PROJ-1"}
    assert reply["correlationId"] == request["messageId"] and reply["payload"]["status"] == "success"
    result = reply["payload"]["result"]
    assert result["plugin"] == plugin and result["command"] == dispatched["payload"]["command"]
    assert result["decision"]["routingDecision"]["primaryPlugin"] == plugin
    assert result["result"] == {"handled": dispatched["payload"]}


def test_a_routed_request_that_states_too_little_is_asked_for_more(
    broker: Broker, sockets: list[zmq.Socket], client: Client
) -> None:
    """The command's required parameter is neither given nor in the text: the client gets
    NEEDS_INPUT naming it, no worker receives anything, and the decision row says so."""
    worker = start_worker(broker, sockets, client, "jira-orchestrator")
    caller = RawClient(broker, sockets)
    request = route_request(ROUTED_TEXT, collaborate=False)
    caller.send("arbiter.route", env.encode(request))
    error = error_of(caller.recv(), "arbiter.route")["payload"]["error"]
    assert error["code"] == "NEEDS_INPUT" and "issueKey" in error["message"], error
    assert error["missing"][0]["plugin"] == "jira-orchestrator" and error["missing"][0]["missing"] == ["issueKey"]
    assert error["decision"]["routingDecision"]["primaryPlugin"] == "jira-orchestrator"
    assert worker.recv(0.5) is None, "a request that misses a required parameter reached the worker"
    worker.send(DISCONNECT)
    sql = f"SELECT outcome FROM routing_decisions WHERE request_id = '{error['decision']['requestId']}'"
    (outcome,) = broker_helpers.wait_until(lambda: broker_helpers.rows_once(broker.root, sql), what="the decision row")[
        0
    ]
    assert orjson.loads(outcome)["status"] == "needs-input"


@pytest.mark.parametrize(
    "text,given,expected",
    [
        ("start work on PROJ-42 in jira, the login bug", {}, {"issueKey": "PROJ-42"}),  # said in the text
        ("start work on PROJ-42 in jira, the login bug", {"issueKey": "OPS-7"}, {"issueKey": "OPS-7"}),  # given wins
    ],
)
def test_a_parameter_the_text_states_reaches_the_worker(
    broker: Broker,
    sockets: list[zmq.Socket],
    client: Client,
    text: str,
    given: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    worker = start_worker(broker, sockets, client, "jira-orchestrator")
    caller = RawClient(broker, sockets)
    request = route_request(text, parameters=given, collaborate=False)
    caller.send("arbiter.route", env.encode(request))
    address, dispatched = _request_with_id(worker, request["messageId"])
    worker.reply(address, env.encode(env.success_reply(dispatched, "jira-orchestrator", {"ok": True})))
    reply = orjson.loads(caller.recv()[3])
    worker.send(DISCONNECT)
    assert reply["payload"]["status"] == "success", reply
    assert dispatched["payload"]["parameters"] == expected


def _request_with_id(worker: RawWorker, message_id: str) -> tuple[bytes, dict[str, Any]]:
    """Our request, answering any other first: earlier tests may have left routed requests queued."""
    while True:
        address, body = worker.request()
        envelope = orjson.loads(body[0])
        if envelope["messageId"] == message_id:
            return address, envelope
        worker.reply(address, env.encode(env.error_reply(envelope, "tests", "STALE", "left by an earlier test")))


def test_no_route(broker: Broker, sockets: list[zmq.Socket]) -> None:
    caller = RawClient(broker, sockets)
    request = route_request("zxqv wqpl vvvv")
    caller.send("arbiter.route", env.encode(request))
    reply = error_of(caller.recv(), "arbiter.route")
    assert reply["correlationId"] == request["messageId"]
    assert reply["payload"]["error"]["code"] == "NO_ROUTE"
    assert "decision" in reply["payload"]["error"]
