"""The worker pool on its own, with a host that records what it would send: what an unreachable
worker said before it went is heard before what it held is handed on."""

from __future__ import annotations

import time
from collections import Counter

from arbiter.broker.settings import Settings
from arbiter.broker.workers import Pending, Service, WorkerPool, WorkerState
from arbiter.wire.mdp import DISCONNECT, READY, REPLY

SETTINGS = Settings(
    "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3", 1.0, 3, 1 << 20, 100, 100, 1000, 30.0, 10.0
)


class Host:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.sent: list[tuple[bytes, list[bytes]]] = []

    def send(self, frames: list[bytes], worker: WorkerState | None = None, drop: str | None = None) -> None:
        self.sent.append((frames[0], frames))

    def send_batched(self, worker: WorkerState, item: bytes) -> None: ...

    def worker_event(self, event: str, service: Service, identity: bytes, why: str | None = None) -> None: ...


class Answers:
    def __init__(self) -> None:
        self.finished: list[tuple[Pending, list[bytes]]] = []

    def finish(self, pending: Pending, body: list[bytes]) -> None:
        pending.answered = True
        self.finished.append((pending, body))

    def expire(self, pending: Pending, message: str) -> None: ...

    def poisoned(self, pending: Pending) -> None: ...


def _request(body: bytes) -> Pending:
    now = time.monotonic()
    return Pending(b"client", b"svc", [body], now + 30, now)


def test_what_an_unreachable_worker_answered_before_it_went_is_not_handed_on() -> None:
    host, answers = Host(), Answers()
    pool = WorkerPool(host, answers, SETTINGS)
    pool.on_command(b"w1", READY, [b"svc"])
    pool.on_command(b"w2", READY, [b"svc"])
    service = pool.services[b"svc"]
    first, second = _request(b"a"), _request(b"b")
    pool.submit(service, first)
    pool.submit(service, second)
    (to_w1, frames_w1), (to_w2, _) = host.sent
    assert (to_w1, to_w2) == (b"w1", b"w2")
    token = frames_w1[4]
    w1 = pool.workers[b"w1"]
    pool.unreachable(w1)  # a send to w1 failed: it closed its connection ...
    pool.on_command(b"w1", REPLY, [token, b"", b"done"])  # ... after it had answered
    pool.on_command(b"w1", DISCONNECT, [])
    pool.forget_unreachable()
    assert [p for p, _ in answers.finished] == [first]
    assert host.counters["redelivered"] == 0 and not service.queue  # nothing to run twice
    third = _request(b"c")
    pool.submit(service, third)
    assert all(to != b"w1" for to, _ in host.sent[2:])  # nothing more goes to it


def test_what_an_unreachable_worker_did_not_answer_is_handed_on_once_its_words_are_read() -> None:
    host, answers = Host(), Answers()
    pool = WorkerPool(host, answers, SETTINGS)
    pool.on_command(b"w1", READY, [b"svc"])
    service = pool.services[b"svc"]
    held = _request(b"a")
    pool.submit(service, held)
    pool.unreachable(pool.workers[b"w1"])
    assert list(service.queue) == [] and b"w1" in pool.workers  # not yet: its reply may be on its way
    pool.forget_unreachable()
    assert list(service.queue) == [held] and b"w1" not in pool.workers and host.counters["redelivered"] == 1
