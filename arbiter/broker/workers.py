"""Workers and the requests they hold: MDP's worker side, service queues, and what happens to a
request when its worker goes away.

A service is a name, a queue of requests waiting for a worker, and its workers, least recently
used first. A worker holds up to ``credit`` requests (plain MDP workers: one), each under a token
of its own; its replies name the token. Requests travel in the MDP form, packed (no MDP preamble)
or batched (the requests of one burst in one message), as the worker's READY asked
(docs/PROTOCOL.md §5).

When a worker is lost (it disconnects, misses heartbeats, garbles a reply, or cannot be reached)
what it held goes back to the front of its queue, to be delivered again. A request whose workers
keep getting lost while they hold it is poison: after ``max_deliveries`` such losses it is
handed back to the broker as poison instead of killing one more worker.

The pool runs on the broker's loop thread. It asks the broker to send (:class:`PoolHost`), and the
client side to answer a request or give it up (:class:`Answers`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

from arbiter.broker.settings import Settings
from arbiter.wire.mdp import (
    BATCHED,
    DISCONNECT,
    HEARTBEAT,
    MDPW01,
    PACKED,
    READY,
    REPLY,
    REQUEST,
    RESERVED_PREFIXES,
    ProtocolError,
    Tokens,
    pack,
    parse_ready_options,
    service_name,
    unbatch,
    unpack,
)

log = logging.getLogger("arbiter.broker")


class Try(Protocol):
    """A request the broker sends a worker on behalf of a client's request — a routed request's
    try at a plugin, a decision asked of a decider. It holds no client slot of its own; its
    owner hears how it ends."""

    @property
    def settled(self) -> bool:
        """The try is over (answered, given up, or its request ended): its worker no longer matters."""
        ...

    def answered(self, body: list[bytes]) -> None:
        """A worker replied."""
        ...

    def lost(self, code: str, message: str, reason: str) -> None:
        """The broker gave the try up (poison, expired): the owner ends its request."""
        ...


@dataclass(eq=False, slots=True)
class Pending:
    """A request the broker has accepted and not yet answered."""

    client: bytes
    service_frame: bytes  # the service the client addressed; the reply carries it back
    body: list[bytes]
    deadline: float  # monotonic; the client is answered EXPIRED then, queued or held
    received: float
    message_id: str | None = None
    attempt: Try | None = None  # set when the broker sends this on behalf of a client's request
    redeliveries: int = 0  # workers lost while holding it
    answered: bool = False  # its client has its answer and its slot is free; a late reply is dropped


@dataclass(eq=False, slots=True)
class WorkerState:
    identity: bytes
    service: Service
    credit: int
    expiry: float
    held: dict[bytes, Pending] = field(default_factory=dict)
    served: int = 0
    delivery: bytes | None = None  # PACKED or BATCHED as READY asked (PROTOCOL.md §5.1, §5.2); None: MDP

    @property
    def has_credit(self) -> bool:
        return len(self.held) < self.credit


@dataclass(eq=False, slots=True)
class Service:
    name: str
    frame: bytes
    shown: str  # the name status, events and errors use (an internal service's name holds a secret)
    queue: deque[Pending] = field(default_factory=deque)
    ready: deque[WorkerState] = field(default_factory=deque)  # least recently used first
    workers: dict[bytes, WorkerState] = field(default_factory=dict)
    requests: int = 0


class PoolHost(Protocol):
    """What the pool asks of the broker."""

    counters: Counter[str]
    dropped: Counter[str]

    def send(self, frames: list[bytes], worker: WorkerState | None = None, drop: str | None = None) -> None: ...

    def send_batched(self, worker: WorkerState, item: bytes) -> None: ...

    def worker_event(self, event: str, service: Service, identity: bytes, why: str | None = None) -> None: ...


class Answers(Protocol):
    """Who answers a request's client when a worker replied, or when the pool gives it up."""

    def finish(self, pending: Pending, body: list[bytes]) -> None: ...

    def expire(self, pending: Pending, message: str) -> None: ...

    def poisoned(self, pending: Pending) -> None: ...


class WorkerPool:
    """Every service and worker the broker knows; the loop thread's alone."""

    def __init__(self, host: PoolHost, answers: Answers, settings: Settings):
        self.host = host
        self.answers = answers
        self.settings = settings
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.internal: dict[str, str] = {}  # reserved names only the broker's own processes serve -> as shown
        self.lost: list[WorkerState] = []  # unreachable, to be forgotten once their last words are read
        self._tokens = Tokens()

    # -- requests in ----------------------------------------------------------------------

    def service(self, frame: bytes) -> Service:
        service = self.services.get(frame)
        if service is None:
            name = frame.decode("utf-8")
            service = self.services[frame] = Service(name, frame, self.internal.get(name, name))
        return service

    def has_workers(self, name: str) -> bool:
        service = self.services.get(name.encode())
        return service is not None and bool(service.workers)

    def submit(self, service: Service, pending: Pending) -> bool:
        """Hand ``pending`` to a worker with credit, or queue it; False when the queue is full."""
        service.requests += 1
        if service.ready and not service.queue:
            self.deliver(service.ready.popleft(), pending)
            return True
        if len(service.queue) >= self.settings.service_queue:
            return False
        service.queue.append(pending)
        self.pump(service)
        return True

    def enqueue(self, name: str, pending: Pending) -> None:
        """Queue a routed try; routed tries are bounded by the client slots their requests hold."""
        service = self.service(name.encode())
        service.requests += 1
        if service.ready and not service.queue:
            self.deliver(service.ready.popleft(), pending)
        else:
            service.queue.append(pending)
            self.pump(service)

    def withdraw(self, name: str, pending: Pending) -> None:
        """Take a request still waiting in its queue back out (a worker holding it keeps it)."""
        service = self.services.get(name.encode())
        if service is not None:
            try:
                service.queue.remove(pending)
            except ValueError:
                pass

    def pump(self, service: Service) -> None:
        """Give waiting requests to workers with credit; one that expired meanwhile is failed instead."""
        if not service.queue:
            return
        now = time.monotonic()
        while service.queue and service.ready:
            pending = service.queue.popleft()
            if pending.deadline <= now:
                self.answers.expire(pending, _waited(service, pending, now))
                continue
            self.deliver(service.ready.popleft(), pending)

    def deliver(self, worker: WorkerState, pending: Pending) -> None:
        """Send to ``worker`` (just taken from the ready list); it goes back while it has credit.
        A body that does not fit the worker's form (no frame to glue the token to; several frames
        for a batch) goes in the MDP form, which such workers also read."""
        token = self._tokens.next()
        worker.held[token] = pending
        if worker.has_credit:
            worker.service.ready.append(worker)
        body = pending.body
        if worker.delivery == BATCHED and len(body) == 1:
            self.host.send_batched(worker, token + body[0])
            return
        if worker.delivery == PACKED and body:
            frames = [worker.identity, *pack(token, body)]
        else:
            frames = [worker.identity, b"", MDPW01, REQUEST, token, b"", *body]
        self.host.send(frames, worker, "worker-unreachable")

    # -- what workers say -----------------------------------------------------------------

    def on_command(self, identity: bytes, command: bytes, rest: list[bytes]) -> None:
        worker = self.workers.get(identity)
        if command == REPLY:
            if worker is None:
                self.disconnect(identity, "unknown-worker")
            elif len(rest) < 2 or rest[1]:
                self._bad_reply(worker, "malformed-reply")
            else:
                self._take_reply(worker, rest[0], rest[2:])
        elif command == HEARTBEAT:
            if worker is None:
                self.disconnect(identity, "unknown-worker")
            else:
                worker.expiry = time.monotonic() + self.settings.worker_patience_s
        elif command == READY:
            if worker is not None:
                self.remove(worker, "second READY")
                self.disconnect(identity, "unexpected-ready")
            else:
                self._on_ready(identity, rest)
        elif command == DISCONNECT:
            if worker is not None:
                self.remove(worker, "disconnected")
        else:
            self.host.dropped["unexpected-command" if command == REQUEST else "unknown-command"] += 1
            if worker is not None:
                self.remove(worker, "unknown command")
            self.disconnect(identity, None)

    def on_packed_reply(self, worker: WorkerState, frames: list[bytes]) -> None:
        try:
            token, body = unpack(frames)
        except ProtocolError as exc:
            self._bad_reply(worker, exc.reason)
            return
        self._take_reply(worker, token, body)

    def on_batched_reply(self, worker: WorkerState, frames: list[bytes]) -> None:
        try:
            replies = unbatch(frames)
        except ProtocolError as exc:
            self._bad_reply(worker, exc.reason)
            return
        for token, body in replies:
            self._take_reply(worker, token, [body])

    def _on_ready(self, identity: bytes, rest: list[bytes]) -> None:
        try:
            if not rest:
                raise ProtocolError("too-few-frames", "READY needs a service frame")
            name = service_name(rest[0])
            if name.startswith(RESERVED_PREFIXES) and name not in self.internal:
                raise ProtocolError("reserved-service", f"workers may not serve '{name}'")
            credit, delivery = parse_ready_options(rest[1:])
        except ProtocolError as exc:
            self.disconnect(identity, exc.reason)
            return
        service = self.service(rest[0])
        expiry = time.monotonic() + self.settings.worker_patience_s
        worker = WorkerState(identity, service, credit, expiry, delivery=delivery)
        self.workers[identity] = worker
        service.workers[identity] = worker
        service.ready.append(worker)
        self.host.counters["workers-joined"] += 1
        form = f", {delivery.decode()}" if delivery else ""
        log.info(
            "worker %s joined %s (credit %d%s)",
            identity.hex(),
            service.shown,
            credit,
            form,
            extra={"service": service.shown},
        )
        self.host.worker_event("worker-up", service, identity)
        self.pump(service)

    def _bad_reply(self, worker: WorkerState, reason: str) -> None:
        """A worker that garbles a reply cannot be trusted with what it holds: that goes to others."""
        self.host.dropped[reason] += 1
        self.remove(worker, "malformed REPLY")
        self.disconnect(worker.identity, None)

    def _take_reply(self, worker: WorkerState, token: bytes, body: list[bytes]) -> None:
        worker.expiry = time.monotonic() + self.settings.worker_patience_s
        had_credit = worker.has_credit
        pending = worker.held.pop(token, None)
        if not had_credit and worker.identity in self.workers and worker not in self.lost:
            worker.service.ready.append(worker)
        if pending is None or pending.answered:
            self.host.dropped["late-reply"] += 1
        else:
            worker.served += 1
            self.answers.finish(pending, body)
        self.pump(worker.service)

    def disconnect(self, identity: bytes, reason: str | None) -> None:
        if reason:
            self.host.dropped[reason] += 1
        self.host.send([identity, b"", MDPW01, DISCONNECT])

    # -- losing workers -------------------------------------------------------------------

    def unreachable(self, worker: WorkerState) -> None:
        """A send to ``worker`` failed: its connection is gone. Nothing more goes to it, but what it
        holds is not handed on yet: the replies (and the DISCONNECT) it sent before it went are
        still waiting to be read, behind the failed send. Handing on now would give another worker
        requests this one already ran. The loop calls :meth:`forget_unreachable` once it has read
        everything the frontend held."""
        if worker in self.lost or self.workers.get(worker.identity) is not worker:
            return
        self.lost.append(worker)
        try:
            worker.service.ready.remove(worker)
        except ValueError:
            pass

    def forget_unreachable(self) -> None:
        lost, self.lost = self.lost, []
        for worker in lost:
            self.remove(worker, "unreachable")  # unless its DISCONNECT, read meanwhile, did it

    def remove(self, worker: WorkerState, why: str) -> None:
        """Forget a worker; what it held goes back to the front of its queue, to be served again,
        unless it has now been lost with too many workers (poison)."""
        if self.workers.pop(worker.identity, None) is None:
            return
        service = worker.service
        service.workers.pop(worker.identity, None)
        try:
            service.ready.remove(worker)
        except ValueError:
            pass
        held = [p for p in worker.held.values() if not p.answered and not (p.attempt and p.attempt.settled)]
        worker.held.clear()
        if held:
            self.host.counters["redelivered"] += len(held)
        for pending in reversed(held):
            pending.redeliveries += 1
            if pending.redeliveries >= self.settings.max_deliveries:
                self.answers.poisoned(pending)
            else:
                service.queue.appendleft(pending)
        log.info("worker %s left %s (%s)", worker.identity.hex(), service.shown, why, extra={"service": service.shown})
        self.host.worker_event("worker-down", service, worker.identity, why)
        self.pump(service)

    # -- time -----------------------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        """Once per heartbeat interval: forget silent workers, greet the others."""
        for worker in list(self.workers.values()):
            if worker.expiry < now:
                self.host.counters["workers-expired"] += 1
                self.remove(worker, "missed heartbeats")
            else:
                self.host.send([worker.identity, b"", MDPW01, HEARTBEAT], worker)

    def expire(self, now: float) -> None:
        """Every tick: requests past their deadline are given up, waiting or held by a worker that
        does not answer; services nobody serves or waits for are forgotten."""
        for service in list(self.services.values()):
            if service.queue:
                self._expire_queued(service, now)
            elif not service.workers:
                del self.services[service.frame]  # names clients made up must not pile up
            for worker in service.workers.values():
                self._expire_held(worker, now)

    def _expire_held(self, worker: WorkerState, now: float) -> None:
        """A direct request a worker holds past its deadline is answered EXPIRED. The worker keeps
        the slot until it answers or is lost: a hung worker must not be handed the next request."""
        for pending in worker.held.values():
            if pending.deadline <= now and not pending.answered:
                waited = now - pending.received
                message = f"the worker of '{worker.service.shown}' did not answer within {waited:.1f}s"
                self.answers.expire(pending, message)

    def _expire_queued(self, service: Service, now: float) -> None:
        keep: deque[Pending] = deque()
        for pending in service.queue:
            if pending.deadline > now:
                keep.append(pending)
            else:
                self.answers.expire(pending, _waited(service, pending, now))
        service.queue = keep

    # -- what is held -------------------------------------------------------------------

    def held(self) -> list[Pending]:
        return [p for w in self.workers.values() for p in w.held.values()]

    def take_queued(self) -> list[Pending]:
        """Every request still waiting for a worker, out of its queue."""
        taken = []
        for service in self.services.values():
            taken += service.queue
            service.queue.clear()
        return taken


def _waited(service: Service, pending: Pending, now: float) -> str:
    return f"no worker of '{service.shown}' took the request within {now - pending.received:.1f}s"
