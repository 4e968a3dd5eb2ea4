"""The broker: one ROUTER speaking MDP/0.1 to clients and workers, the event bus, and routed dispatch.

Everything socket-related runs on one thread, the loop in :meth:`Broker.run`; other threads
(the reloader, the database writers, signal handlers) talk to it only through :meth:`post`,
which queues a callable and wakes the loop through a pipe. So no lock guards the broker's
state, and a snapshot swap happens between two messages, never during one.

The hot path of a direct request reads three frames and forwards the body as bytes: bodies
are decoded only when a request has to wait (to learn its deadline and id) or is addressed to
one of Arbiter's own services.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import resource
import select
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import orjson
import zmq

from arbiter.broker import messages as svc
from arbiter.broker.dispatch import Attempt, Dispatcher, Routed
from arbiter.broker.events import EventHub
from arbiter.broker.resilience import Transition
from arbiter.project.snapshot import Snapshot
from arbiter.routing.explain import render
from arbiter.routing.match import Health
from arbiter.routing.pipeline import Request, Router, new_request_id
from arbiter.store import decisions as record
from arbiter.store.recorder import Recorder
from arbiter.wire import envelope as env
from arbiter.wire.frames import has_input, recv_frames, send_frames
from arbiter.wire.mdp import (
    BATCHED,
    DISCONNECT,
    HEARTBEAT,
    MDPC01,
    MDPW01,
    MMI_PREFIX,
    MMI_SERVICE,
    PACKED,
    READY,
    REPLY,
    REQUEST,
    TOKEN_BYTES,
    ProtocolError,
    pack,
    parse,
    parse_ready_options,
    service_name,
    unbatch,
    unpack,
)

log = logging.getLogger("arbiter.broker")

DECISION_CACHE_SIZE = 4096
POLLIN = int(zmq.POLLIN)
MAX_BATCH = 256  # messages read per socket before looking at the others again
SHUTDOWN_GRACE_S = 5.0
MIN_FLUSH_S = 0.01  # batch_ms may be 0 ("at once"): the loop still only flushes this often
TICK_S = 0.1  # how often deadlines (tries, queued requests) and circuit timers are looked at
OUTBOX_BATCH = 16  # messages the loop gathers before sending them in one burst (see Broker._send)
OUTBOX_WAIT_S = 0.0005  # ... and how long the first of them may wait for the others


@dataclass(frozen=True)
class Settings:
    """The broker's part of configs/broker.yaml, resolved once per snapshot."""

    frontend: str
    events_pub: str
    events_sub: str
    heartbeat_s: float
    liveness: int
    max_message_bytes: int
    client_inflight: int
    service_queue: int
    total_pending: int
    request_timeout_s: float
    attempt_timeout_s: float

    @property
    def worker_patience_s(self) -> float:
        """How long a silent worker is still believed alive (MDP: heartbeat × liveness)."""
        return self.heartbeat_s * self.liveness

    @classmethod
    def of(cls, config: Mapping[str, Any], **overrides: str | None) -> Settings:
        endpoints = config["endpoints"]
        limits = config["limits"]
        return cls(
            frontend=overrides.get("frontend") or endpoints["frontend"],
            events_pub=overrides.get("events_pub") or endpoints["events_pub"],
            events_sub=overrides.get("events_sub") or endpoints["events_sub"],
            heartbeat_s=config["heartbeat"]["interval_ms"] / 1000,
            liveness=config["heartbeat"]["liveness"],
            max_message_bytes=limits["max_message_bytes"],
            client_inflight=limits["client_inflight"],
            service_queue=limits["service_queue"],
            total_pending=limits["total_pending"],
            request_timeout_s=config["request_timeout_ms"] / 1000,
            attempt_timeout_s=config["dispatch"]["attempt_timeout_ms"] / 1000,
        )


@dataclass(eq=False, slots=True)
class Pending:
    """A request the broker has accepted and not yet answered."""

    client: bytes
    service_frame: bytes  # the service the client addressed; the reply carries it back
    body: list[bytes]
    deadline: float  # monotonic; a request still queued then expires
    received: float
    message_id: str | None = None
    attempt: Attempt | None = None  # set when this is one try of a routed request
    redeliveries: int = 0


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
    queue: deque[Pending] = field(default_factory=deque)
    ready: deque[WorkerState] = field(default_factory=deque)  # least recently used first
    workers: dict[bytes, WorkerState] = field(default_factory=dict)
    requests: int = 0


class Broker:
    """Serve one project; see the module docstring for the threading rule."""

    def __init__(
        self,
        snapshot: Snapshot,
        router: Router,
        settings: Settings,
        *,
        decisions: Recorder | None = None,
        dead_letters: Any = None,
        context: zmq.Context | None = None,
    ):
        self.snapshot = snapshot
        self.router = router
        self.settings = settings
        self.decisions = decisions
        self.dead_letters = dead_letters
        self.ctx = context or zmq.Context.instance()
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.client_inflight: dict[bytes, int] = {}  # a plain dict: Counter's __missing__ is Python
        self.pending_total = 0
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.decision_cache: OrderedDict[tuple, svc.Decided] = OrderedDict()
        self.reload_state: dict[str, Any] = {
            "fingerprint": snapshot.fingerprint,
            "loadedAt": env.iso(env.utc_now()),
            "lastReloadOk": True,
        }
        self.started = time.time()
        self._tokens = itertools.count(1)
        self._posted: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._running = False
        self._stopping = False
        self._next_heartbeat = 0.0  # monotonic time of the next round of heartbeats
        self.frontend: zmq.Socket | None = None
        self.events: EventHub | None = None
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.routed: set[Routed] = set()
        self.health: dict[str, Health] = {}
        self.dispatcher = Dispatcher(self, settings.attempt_timeout_s)
        self._own_services = {svc.ROUTE: self._route, svc.EXPLAIN: self._explain, svc.STATUS: self._status}
        # frames to send, the worker they go to (dropped when unreachable), what to count if they fail
        self._outbox: deque[tuple[list[bytes], WorkerState | None, str | None]] = deque()
        self._outbox_since = 0.0  # when the oldest message in the outbox was queued
        # the open message to each batched worker, still in the outbox, which further requests join
        self._batches: dict[bytes, tuple[WorkerState, list[bytes]]] = {}

    # -- life cycle ---------------------------------------------------------------------

    def bind(self) -> None:
        s = self.settings
        self.frontend = self.ctx.socket(zmq.ROUTER)
        self.frontend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.frontend.setsockopt(zmq.LINGER, 1000)
        # Bodies over the limit get a TOO_LARGE reply; a frame over twice the limit is not even
        # read: libzmq closes that connection, so a flood of huge frames costs no memory.
        self.frontend.setsockopt(zmq.MAXMSGSIZE, 2 * s.max_message_bytes)
        self.frontend.setsockopt(zmq.SNDHWM, 100_000)
        self.frontend.setsockopt(zmq.RCVHWM, 100_000)
        self.frontend.bind(s.frontend)
        self.events = EventHub(self.ctx, s.events_pub, s.events_sub)
        log.info("frontend %s (ROUTER, MDP/0.1 clients and workers)", s.frontend)
        log.info("events: publishers connect to %s (XSUB), subscribers to %s (XPUB)", s.events_pub, s.events_sub)

    def post(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the loop thread soon. Safe from any thread and from signal handlers."""
        self._posted.append(action)
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full, so the loop is awake anyway

    def stop(self) -> None:
        self.post(self._begin_shutdown)

    def run(self) -> None:
        """Serve until :meth:`stop`; then answer or dead-letter what is in flight and close."""
        if self.frontend is None:
            self.bind()
        assert self.frontend is not None and self.events is not None
        # Sleep on the sockets' ZMQ_FDs with a plain poll(2): zmq_poll asks every socket for its
        # ZMQ_EVENTS before and after each sleep, two system calls per socket each time, which
        # with three sockets made up most of the system calls of a request/reply round trip.
        sleeper = select.poll()
        hub_fds = set(self.events.fds())
        for fd in (self.frontend.getsockopt(zmq.FD), *hub_fds, self._wake_r):
            sleeper.register(fd, select.POLLIN)
        tick = TICK_S
        next_tick = time.monotonic() + tick
        self._running = True
        if self.decisions is not None:
            self._flush_decisions()
        self.events.publish("system/health", {"event": "broker-up", "frontend": self.settings.frontend})
        more = True  # input may be waiting: look before sleeping
        while self._running:
            if more:
                timeout_ms = 0
            else:
                wake = min(next_tick, self.timers[0][0]) if self.timers else next_tick
                timeout_ms = max(0, int((wake - time.monotonic()) * 1000) + 1)
            fired = [fd for fd, _ in sleeper.poll(timeout_ms)]
            # Messages first: a request on its way to a worker should not wait for bookkeeping.
            more = self._drain_frontend()
            if self.events.touched or not hub_fds.isdisjoint(fired):
                more = self.events.drain(MAX_BATCH) or more
            # What runs next may send on the sockets, and their FDs are edge-triggered: a socket
            # is only slept on after a read found it empty with no operation on it since. So
            # whenever anything below runs, the sockets are looked at again before sleeping.
            if self._posted or self._wake_r in fired:
                self._run_posted()
                more = True
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                self._guarded(heapq.heappop(self.timers)[2])
                more = True
            if now >= next_tick:
                self._housekeeping(now)
                next_tick = now + tick
                more = True
            if self._outbox:
                self._guarded(self._send_out)
                more = True
        self._close()

    def _run_posted(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self._posted:
            self._guarded(self._posted.popleft())

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # a posted action, a timer or a burst of sends must never take the loop down
            log.exception("internal action failed")
            self.counters["internal-errors"] += 1

    def _flush_decisions(self) -> None:
        """Hand the decision log what gathered, every ``batch_ms`` (configs/state.yaml)."""
        recorder = self.decisions
        assert recorder is not None
        recorder.flush()
        self.call_at(time.monotonic() + max(MIN_FLUSH_S, recorder.interval_s), self._flush_decisions)

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the loop thread at monotonic time ``when`` (loop thread only)."""
        heapq.heappush(self.timers, (when, next(self._tokens), action))

    # -- the frontend -------------------------------------------------------------------

    def _drain_frontend(self) -> bool:
        """Handle what the frontend holds; True when the batch ran out before the socket did.
        Reading until a read fails is what lets the loop sleep on the socket's edge-triggered FD:
        a failed read processes the socket's pending commands and arms it to signal the next
        message (libzmq), as a ZMQ_EVENTS check would, and costs less when messages stream in.
        After the first message of a drain the check is made instead: when that message came
        alone, as with one request at a time, no read fails. A failed read raises, and on a sync
        round trip the broker's loop used 93-115 µs of CPU with the exceptions, 71-78 µs without."""
        sock = self.frontend
        for count in range(MAX_BATCH):
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                if not self._outbox:
                    return False
                self._guarded(self._send_out)  # input ran dry: answer now, then read again (re-arms the FD)
                continue
            try:
                self._on_frontend(frames)
            except Exception:  # one bad message must never stop the broker
                log.exception("internal error on a message of %d frames", len(frames))
                self.dropped["internal-error"] += 1
                self._internal_error_reply(frames)
            if self._outbox and (not count or time.monotonic() - self._outbox_since >= OUTBOX_WAIT_S):
                # a lone request (no stream yet) must not wait for the failed read, nor any
                # message for a stream of slow ones (say, new texts to route) to run dry
                self._guarded(self._send_out)
            if not count and not self._outbox and not has_input(sock):  # type: ignore[arg-type]
                return False
        return True

    def _on_frontend(self, frames: list[bytes]) -> None:
        if len(frames) >= 4 and not frames[1]:
            header = frames[2]
            if header == MDPC01:
                self._on_client(frames[0], frames[3], frames[4:])
                return
            if header == MDPW01:
                self._on_worker(frames[0], frames[3], frames[4:])
                return
        elif len(frames) >= 2 and frames[1]:
            worker = self.workers.get(frames[0])
            if worker is not None and worker.delivery:  # only a packed or batched reply lacks the delimiter
                if worker.delivery == BATCHED:
                    self._on_batched_reply(worker, frames[1:])
                else:
                    self._on_packed_reply(worker, frames[1:])
                return
        self._malformed(frames)

    def _internal_error_reply(self, frames: list[bytes]) -> None:
        if len(frames) >= 4 and frames[2] == MDPC01:
            message = "the broker failed on this request; it is logged"
            self._send_client(frames[0], frames[3], [svc.error_body(frames[4:], "INTERNAL_ERROR", message)])

    def _malformed(self, frames: list[bytes]) -> None:
        """Count why a message was unreadable. It gets no reply: without the delimiter and the
        protocol header the broker cannot tell a client from a worker, nor frame an answer."""
        try:
            parse(frames)
        except ProtocolError as exc:
            self.dropped[exc.reason] += 1

    def _on_client(self, client: bytes, service_frame: bytes, body: list[bytes]) -> None:
        self.counters["requests"] += 1
        service = self.services.get(service_frame)
        if service is None:
            try:
                name = service_name(service_frame)
            except ProtocolError as exc:
                self.dropped[exc.reason] += 1
                self._reply_error(client, service_frame, body, "BAD_REQUEST", str(exc), dead=False)
                return
            if name.startswith(MMI_PREFIX):
                self._on_mmi(client, service_frame, name, body)
                return
            if name.startswith("arbiter."):
                self._on_own_service(client, service_frame, name, body)
                return
        if not self._admit(client, service_frame, body):
            return
        if service is None:
            service = self._service(service_frame)
        now = time.monotonic()
        pending = Pending(client, service_frame, body, now + self.settings.request_timeout_s, now)
        self._submit(service, pending)

    def _admit(self, client: bytes, service_frame: bytes, body: list[bytes]) -> bool:
        """The limits every accepted request must pass; a refused one gets an error reply."""
        size = sum(map(len, body))
        if size > self.settings.max_message_bytes:
            self._reject(
                client,
                service_frame,
                body,
                "TOO_LARGE",
                f"the body is {size} bytes, over the limit of {self.settings.max_message_bytes}",
                dead=False,
            )
            return False
        held = self.client_inflight.get(client, 0)
        if held >= self.settings.client_inflight:
            self._reject(
                client,
                service_frame,
                body,
                "INFLIGHT_LIMIT",
                f"this client already has {self.settings.client_inflight} requests in flight",
            )
            return False
        if self.pending_total >= self.settings.total_pending:
            self._reject(client, service_frame, body, "QUEUE_FULL", "the broker holds as many requests as it may")
            return False
        self.client_inflight[client] = held + 1
        self.pending_total += 1
        return True

    def _reject(
        self, client: bytes, service_frame: bytes, body: list[bytes], code: str, message: str, dead: bool = True
    ) -> None:
        self.dropped[code.lower().replace("_", "-")] += 1
        self._reply_error(client, service_frame, body, code, message, dead=dead, reason="rejected")

    def _service(self, frame: bytes) -> Service:
        service = self.services.get(frame)
        if service is None:
            service = self.services[frame] = Service(frame.decode("utf-8"), frame)
        return service

    def _submit(self, service: Service, pending: Pending) -> None:
        """Hand ``pending`` to a worker with credit, or queue it; once the broker is stopping,
        refuse it, as the requests that waited when it began."""
        if self._stopping:
            self._release(pending.client)
            self._fail(pending, "SHUTTING_DOWN", "the broker is stopping", reason="shutdown")
            return
        service.requests += 1
        if service.ready and not service.queue:
            self._dispatch(service.ready.popleft(), pending)
            return
        if len(service.queue) >= self.settings.service_queue:
            self._release(pending.client)
            self._reject(
                pending.client,
                pending.service_frame,
                pending.body,
                "QUEUE_FULL",
                f"the queue of service '{service.name}' is full ({self.settings.service_queue})",
            )
            return
        self._learn_deadline(pending)
        service.queue.append(pending)
        self._pump(service)

    def _learn_deadline(self, pending: Pending) -> None:
        """A waiting request expires at its envelope's expiresAt, when it has one."""
        if pending.message_id is not None or len(pending.body) != 1 or pending.body[0][:1] != b"{":
            return  # plain MDP bodies wait until request_timeout_ms; no need to try parsing them
        envelope = env.as_envelope(pending.body[0])
        if envelope is None:
            return
        pending.message_id = envelope["messageId"]
        pending.deadline = min(pending.deadline, time.monotonic() + _seconds_left(envelope, self.settings))

    def _pump(self, service: Service) -> None:
        """Give waiting requests to workers with credit; one that expired meanwhile is failed instead."""
        if not service.queue:
            return
        now = time.monotonic()
        while service.queue and service.ready:
            pending = service.queue.popleft()
            if pending.deadline <= now:
                self._expire_one(service, pending, now)
                continue
            self._dispatch(service.ready.popleft(), pending)

    def _dispatch(self, worker: WorkerState, pending: Pending) -> None:
        """Send to ``worker`` (just taken from the ready list); it goes back while it has credit.
        A packed worker gets two frames fewer each way; a batched one gets the requests of a
        burst in one message. A body that does not fit the worker's form (no frame to glue the
        token to; several frames for a batch) goes in the MDP form, which such workers also read."""
        token = next(self._tokens).to_bytes(TOKEN_BYTES, "little")
        worker.held[token] = pending
        if worker.has_credit:
            worker.service.ready.append(worker)
        body = pending.body
        if worker.delivery == BATCHED and len(body) == 1:
            self._send_batched(worker, token + body[0])
            return
        if worker.delivery == PACKED and body:
            frames = [worker.identity, *pack(token, body)]
        else:
            frames = [worker.identity, b"", MDPW01, REQUEST, token, b"", *body]
        self._send(frames, worker, "worker-unreachable")

    # -- workers ------------------------------------------------------------------------

    def _on_worker(self, identity: bytes, command: bytes, rest: list[bytes]) -> None:
        worker = self.workers.get(identity)
        if command == REPLY:
            if worker is None:
                self._disconnect(identity, "unknown-worker")
                return
            self._on_reply(worker, rest)
        elif command == HEARTBEAT:
            if worker is None:
                self._disconnect(identity, "unknown-worker")
                return
            worker.expiry = time.monotonic() + self.settings.worker_patience_s
        elif command == READY:
            if worker is not None:
                self._remove_worker(worker, "second READY")
                self._disconnect(identity, "unexpected-ready")
                return
            self._on_ready(identity, rest)
        elif command == DISCONNECT:
            if worker is not None:
                self._remove_worker(worker, "disconnected")
        else:
            self.dropped["unexpected-command" if command == REQUEST else "unknown-command"] += 1
            if worker is not None:
                self._remove_worker(worker, "unknown command")
            self._disconnect(identity, None)

    def _on_ready(self, identity: bytes, rest: list[bytes]) -> None:
        try:
            if not rest:
                raise ProtocolError("too-few-frames", "READY needs a service frame")
            name = service_name(rest[0])
            if name.startswith(svc.RESERVED_PREFIXES):
                raise ProtocolError("reserved-service", f"workers may not serve '{name}'")
            credit, delivery = parse_ready_options(rest[1:])
        except ProtocolError as exc:
            self._disconnect(identity, exc.reason)
            return
        service = self._service(rest[0])
        expiry = time.monotonic() + self.settings.worker_patience_s
        worker = WorkerState(identity, service, credit, expiry, delivery=delivery)
        self.workers[identity] = worker
        service.workers[identity] = worker
        service.ready.append(worker)
        self.counters["workers-joined"] += 1
        form = f", {delivery.decode()}" if delivery else ""
        log.info("worker %s joined %s (credit %d%s)", identity.hex(), name, credit, form)
        self._health_event("worker-up", service, identity)
        self._pump(service)

    def _on_reply(self, worker: WorkerState, rest: list[bytes]) -> None:
        if len(rest) < 2 or rest[1]:
            self._bad_reply(worker, "malformed-reply")
            return
        self._take_reply(worker, rest[0], rest[2:])

    def _on_packed_reply(self, worker: WorkerState, frames: list[bytes]) -> None:
        try:
            token, body = unpack(frames)
        except ProtocolError as exc:
            self._bad_reply(worker, exc.reason)
            return
        self._take_reply(worker, token, body)

    def _on_batched_reply(self, worker: WorkerState, frames: list[bytes]) -> None:
        try:
            replies = unbatch(frames)
        except ProtocolError as exc:
            self._bad_reply(worker, exc.reason)
            return
        for token, body in replies:
            self._take_reply(worker, token, [body])

    def _bad_reply(self, worker: WorkerState, reason: str) -> None:
        """A worker that garbles a reply cannot be trusted with what it holds: that goes to others."""
        self.dropped[reason] += 1
        self._remove_worker(worker, "malformed REPLY")
        self._disconnect(worker.identity, None)

    def _take_reply(self, worker: WorkerState, token: bytes, body: list[bytes]) -> None:
        worker.expiry = time.monotonic() + self.settings.worker_patience_s
        had_credit = worker.has_credit
        pending = worker.held.pop(token, None)
        if not had_credit and worker.identity in self.workers:
            worker.service.ready.append(worker)
        if pending is None:
            self.dropped["late-reply"] += 1
        else:
            worker.served += 1
            self._complete(pending, body)
        self._pump(worker.service)

    def _complete(self, pending: Pending, body: list[bytes]) -> None:
        attempt = pending.attempt
        if attempt is not None:
            # Pending and Attempt refer to each other; unlinked, both are freed by reference
            # counting as soon as the request is done, instead of waiting for the cycle collector.
            pending.attempt = None
            self.counters["routed-replies"] += 1
            self.dispatcher.on_reply(attempt, body)
            return
        self._release(pending.client)
        self.counters["replies"] += 1
        self._send_client(pending.client, pending.service_frame, body)

    def _release(self, client: bytes) -> None:
        """Free the in-flight slot a client request held since it was admitted."""
        self.pending_total -= 1
        left = self.client_inflight.get(client, 0) - 1
        if left > 0:
            self.client_inflight[client] = left
        else:
            del self.client_inflight[client]

    # -- what the dispatcher asks of the broker -----------------------------------------

    def has_workers(self, plugin: str) -> bool:
        service = self.services.get(plugin.encode())
        return service is not None and bool(service.workers)

    def send_attempt(self, attempt: Attempt, body: bytes) -> Pending:
        """Queue or dispatch one try of a routed request; it holds no client slot of its own."""
        routed = attempt.routed
        now = time.monotonic()
        pending = Pending(routed.client, routed.service_frame, [body], float("inf"), now, routed.message_id, attempt)
        service = self._service(attempt.plugin.encode())
        service.requests += 1
        if service.ready and not service.queue:
            self._dispatch(service.ready.popleft(), pending)
        else:
            service.queue.append(pending)  # bounded by the client slots routed requests hold
            self._pump(service)
        return pending

    def withdraw(self, attempt: Attempt) -> None:
        """Take a try that is still waiting in its queue back out (a worker holding it keeps it)."""
        service = self.services.get(attempt.plugin.encode())
        if service is not None and attempt.pending is not None:
            try:
                service.queue.remove(attempt.pending)
            except ValueError:
                pass

    def finish_routed(self, routed: Routed, reply: list[bytes], outcome: dict[str, Any], success: bool) -> None:
        self.routed.discard(routed)
        self._release(routed.client)
        self._send_client(routed.client, routed.service_frame, reply)
        self._record_routed(routed, outcome, success)

    def dead_letter_routed(self, routed: Routed, reason: str, detail: str) -> None:
        self._dead_letter(
            routed.service_frame,
            [orjson.dumps(routed.route.envelope)],
            reason,
            detail,
            routed.client,
            routed.message_id,
        )

    def circuit_changed(self, change: Transition) -> None:
        """Publish it, and let the matcher see it from the next decision on."""
        log.warning("circuit of %s: %s -> %s (%s)", change.plugin, change.old, change.new, change.reason)
        self.counters[f"circuit-{change.new}"] += 1
        self.health = {name: Health(circuit=state) for name, state in self.dispatcher.circuits().items()}
        self.decision_cache.clear()
        self.events.publish(
            f"plugin/{change.plugin}/circuit-breaker",
            {  # type: ignore[union-attr]
                "plugin": change.plugin,
                "state": change.new,
                "previous": change.old,
                "reason": change.reason,
                "failures": change.failures,
            },
        )
        if self.decisions is not None:
            plugin = self.snapshot.plugins.get(change.plugin)
            version = plugin.version if plugin else "?"
            self.decisions.submit_circuit(change.plugin, version, change.new, change.reason)

    def _remove_worker(self, worker: WorkerState, why: str) -> None:
        """Forget a worker; what it held goes back to the front of its queue, to be served again."""
        if self.workers.pop(worker.identity, None) is None:
            return
        service = worker.service
        service.workers.pop(worker.identity, None)
        try:
            service.ready.remove(worker)
        except ValueError:
            pass
        for pending in reversed(list(worker.held.values())):
            if pending.attempt is not None and (pending.attempt.finished or pending.attempt.routed.done):
                continue  # a try that already timed out: the dispatcher has moved on
            pending.redeliveries += 1
            service.queue.appendleft(pending)
        if worker.held:
            self.counters["redelivered"] += len(worker.held)
        worker.held.clear()
        log.info("worker %s left %s (%s)", worker.identity.hex(), service.name, why)
        self._health_event("worker-down", service, worker.identity, why)
        self._pump(service)

    def _disconnect(self, identity: bytes, reason: str | None) -> None:
        if reason:
            self.dropped[reason] += 1
        self._send([identity, b"", MDPW01, DISCONNECT])

    def _health_event(self, event: str, service: Service, identity: bytes, why: str | None = None) -> None:
        data = {"event": event, "service": service.name, "worker": identity.hex(), "workers": len(service.workers)}
        if why:
            data["reason"] = why
        self.events.publish("system/health", data)  # type: ignore[union-attr]

    # -- clients ------------------------------------------------------------------------

    def _send_client(self, client: bytes, service_frame: bytes, body: list[bytes]) -> None:
        self._send([client, b"", MDPC01, service_frame, *body], None, "client-unreachable")

    # -- sending ------------------------------------------------------------------------

    def _send(self, frames: list[bytes], worker: WorkerState | None = None, drop: str | None = None) -> None:
        """Send ``frames`` on the frontend soon, in the order given: with the next burst of up
        to ``OUTBOX_BATCH`` messages; while input keeps coming, at the latest once the oldest
        waiting message has waited ``OUTBOX_WAIT_S`` and the message in hand is handled; else
        when input runs dry.

        A message sent while its pipe is idle costs the loop a system call to wake libzmq's I/O
        thread (measured here: 6.8 µs for a lone 5-frame send, 2.1 µs each in a burst), and that
        thread then wakes for each message. Interleaved with the Python work of each request,
        every send found the pipe idle; sent in bursts, most join a pipe the I/O thread is already
        draining. ``worker``: the worker the message goes to, removed (what it holds handed on)
        when it is unreachable; ``drop``: the reason counted when the message cannot be sent."""
        if not self._outbox:
            self._outbox_since = time.monotonic()
        self._outbox.append((frames, worker, drop))
        if len(self._outbox) >= OUTBOX_BATCH:
            self._guarded(self._send_out)

    def _send_batched(self, worker: WorkerState, item: bytes) -> None:
        """Add one request (token + body) to the message the outbox holds for batched ``worker``,
        or start one. Each request a batch carries is one frame, and one round of Python calls
        into ZeroMQ per message saved, on the broker and on the worker."""
        open_batch = self._batches.get(worker.identity)
        if open_batch is not None and open_batch[0] is worker:
            open_batch[1].append(item)
            return
        frames = [worker.identity, item]
        self._batches[worker.identity] = (worker, frames)
        self._send(frames, worker, "worker-unreachable")

    def _send_out(self) -> None:
        """Send the outbox in order. The loop runs this guarded: should it fail half-way (say,
        handing on what an unreachable worker held), the rest goes with the next call.

        A batch is closed as it leaves, not when this starts: handing on what an unreachable
        worker held runs in here and may open a batch for another worker, which this same call
        sends; a request joining it afterwards would never be sent."""
        outbox, sock, batches = self._outbox, self.frontend, self._batches
        while outbox:
            frames, worker, drop = outbox.popleft()
            if worker is not None:
                open_batch = batches.get(worker.identity)
                if open_batch is not None and open_batch[1] is frames:
                    del batches[worker.identity]  # the worker's next request starts a new message
            try:
                send_frames(sock, frames)  # type: ignore[arg-type]
            except zmq.ZMQError:
                if drop:
                    self.dropped[drop] += 1
                if worker is not None and self.workers.get(worker.identity) is worker:  # once per worker
                    self.counters["workers-unreachable"] += 1
                    self._remove_worker(worker, "unreachable")  # its sends (what it held, to others) go too

    def _reply_error(
        self,
        client: bytes,
        service_frame: bytes,
        body: list[bytes],
        code: str,
        message: str,
        *,
        dead: bool = True,
        reason: str = "rejected",
        **extra: Any,
    ) -> None:
        self._send_client(client, service_frame, [svc.error_body(body, code, message, **extra)])
        if dead:
            self._dead_letter(service_frame, body, reason, f"{code}: {message}", client)

    def _dead_letter(
        self,
        service_frame: bytes,
        body: list[bytes],
        reason: str,
        detail: str,
        client: bytes,
        message_id: str | None = None,
    ) -> None:
        self.counters[f"dead-letters-{reason}"] += 1
        service = service_frame.decode("utf-8", "replace")
        if message_id is None and len(body) == 1:
            envelope = env.as_envelope(body[0])
            message_id = envelope["messageId"] if envelope else None
        if self.dead_letters is not None:
            self.dead_letters.submit(service, list(body), reason, detail, message_id, client.hex())
        self.events.publish(
            "system/dead-letter",
            {
                "service": service,
                "reason": reason,
                "detail": detail,  # type: ignore
                "messageId": message_id,
            },
        )

    def _on_mmi(self, client: bytes, service_frame: bytes, name: str, body: list[bytes]) -> None:
        self.counters["mmi"] += 1
        if name != MMI_SERVICE:
            answer = b"501"
        else:
            asked = body[0] if body else b""
            known = self.services.get(asked)
            own = asked.decode("utf-8", "replace") in svc.OWN_SERVICES
            answer = b"200" if own or (known is not None and known.workers) else b"404"
        self._send_client(client, service_frame, [answer])

    # -- Arbiter's own services ---------------------------------------------------------

    def _on_own_service(self, client: bytes, service_frame: bytes, name: str, body: list[bytes]) -> None:
        handler = self._own_services.get(name)
        if handler is None:
            self.dropped["unknown-service"] += 1
            self._reply_error(
                client,
                service_frame,
                body,
                "UNKNOWN_SERVICE",
                f"no service '{name}'; Arbiter serves {', '.join(svc.OWN_SERVICES)}",
                dead=False,
            )
            return
        if not self._admit(client, service_frame, body):
            return
        now = time.monotonic()
        pending = Pending(client, service_frame, body, now + self.settings.request_timeout_s, now)
        try:
            handler(pending)
        except svc.BadRequest as exc:
            self._release(client)
            self._reject(client, service_frame, body, exc.code, str(exc))

    def _decide(self, route: svc.RouteInput) -> tuple[svc.Decided, str, bool]:
        """The decision for ``route`` and this request's id: from the cache when this snapshot and
        these circuit states already decided it (the cache is emptied whenever either changes)."""
        key = route.cache_key
        hit = self.decision_cache.get(key)
        if hit is not None:
            self.decision_cache.move_to_end(key)
            self.counters["decision-cache-hits"] += 1
            return hit, new_request_id(), True
        request_id = new_request_id()
        result = self.router.route(Request(route.text, route.files, route.caller, request_id), self.health)
        data = result.to_json(trace=False)
        decided = svc.Decided.of(data, record.RowTemplate.of(data, "broker"))
        self.decision_cache[key] = decided
        if len(self.decision_cache) > DECISION_CACHE_SIZE:
            self.decision_cache.popitem(last=False)
        return decided, request_id, False

    def _route(self, pending: Pending) -> None:
        route = svc.read_route_input(pending.body)
        decided, request_id, cached = self._decide(route)
        self._decision_event(decided, request_id, cached)
        if decided.primary is None:
            self._release(pending.client)
            decision = decided.json_for(request_id)
            body = svc.error_body(route.envelope, "NO_ROUTE", "no plugin fits this request", decision=decision)
            self._send_client(pending.client, pending.service_frame, [body])
            self._submit_row(decided, request_id, {"status": "no-route"}, False)
            return
        deadline = min(pending.deadline, pending.received + _seconds_left(route.envelope, self.settings))
        routed = Routed(
            pending.client, pending.service_frame, route, decided, request_id, cached, deadline, pending.received
        )
        self.routed.add(routed)
        self.dispatcher.start(routed)

    def _explain(self, pending: Pending) -> None:
        route = svc.read_route_input(pending.body)
        result = self.router.route(Request(route.text, route.files, route.caller, new_request_id()), self.health)
        data = result.to_json(trace=True)
        data["circuits"] = self.dispatcher.circuits()
        self._record_decision(data, {"status": "explained"}, None)
        self._release(pending.client)
        data["explanation"] = render(result)
        self._send_client(pending.client, pending.service_frame, [svc.success_body(route.envelope, data)])

    def _status(self, pending: Pending) -> None:
        envelope = svc.read_envelope(pending.body) if pending.body else {}
        self._release(pending.client)
        self._send_client(pending.client, pending.service_frame, [svc.success_body(envelope, self.status())])

    def _decision_event(self, decided: svc.Decided, request_id: str, cached: bool) -> None:
        events = self.events
        if events is not None and events.wants("routing/decision"):
            events.publish(
                "routing/decision",
                {
                    "requestId": request_id,
                    "userInput": decided.data.get("userInput"),
                    "primaryPlugin": decided.primary,
                    "fallbackPlugins": list(decided.plan[1:]),
                    "cached": cached,
                },
            )

    def _record_routed(self, routed: Routed, outcome: dict[str, Any], success: bool | None) -> None:
        self._submit_row(routed.decided, routed.request_id, outcome, success)

    def _submit_row(self, decided: svc.Decided, request_id: str, outcome: dict[str, Any], success: bool | None) -> None:
        """Record one request's decision; repeats of a cached decision point at the row of the
        request that made it (:class:`record.RowTemplate`)."""
        if self.decisions is not None:
            self.decisions.submit_entry(decided.row.entry(request_id, outcome, success))

    def _record_decision(self, decision: dict[str, Any], outcome: dict[str, Any], success: bool | None) -> None:
        if self.decisions is not None:
            template = record.RowTemplate.of(decision, "broker")
            self.decisions.submit_entry(template.entry(template.request_id, outcome, success))

    # -- time ---------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        """Heartbeats and dead workers once per heartbeat interval; overdue tries, expired requests
        and circuit timers every tick. Deadlines are checked by scanning what is in flight (small)
        rather than with a timer per request, which would pile up at high rates."""
        self.dispatcher.check_deadlines(now)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_s
            for worker in list(self.workers.values()):
                if worker.expiry < now:
                    self.counters["workers-expired"] += 1
                    self._remove_worker(worker, "missed heartbeats")
                else:
                    self._disconnectless_heartbeat(worker)
        self.dispatcher.tick(now)
        for service in list(self.services.values()):
            if service.queue:
                self._expire(service, now)
            elif not service.workers:
                del self.services[service.frame]  # names clients made up must not pile up
        if self._stopping and not self.pending_total:
            self._running = False

    def _disconnectless_heartbeat(self, worker: WorkerState) -> None:
        self._send([worker.identity, b"", MDPW01, HEARTBEAT], worker)

    def _expire(self, service: Service, now: float) -> None:
        keep: deque[Pending] = deque()
        for pending in service.queue:
            if pending.deadline > now:
                keep.append(pending)
                continue
            self._expire_one(service, pending, now)
        service.queue = keep

    def _expire_one(self, service: Service, pending: Pending, now: float) -> None:
        self._release(pending.client)
        self.dropped["expired"] += 1
        waited = now - pending.received
        message = f"no worker of '{service.name}' took the request within {waited:.1f}s"
        self._fail(pending, "EXPIRED", message, reason="expired")

    def _fail(self, pending: Pending, code: str, message: str, reason: str) -> None:
        """Answer a request the broker gives up on, and keep it in the dead-letter queue."""
        body = svc.error_body(pending.body, code, message)
        self._send_client(pending.client, pending.service_frame, [body])
        detail = f"{code}: {message}"
        self._dead_letter(pending.service_frame, pending.body, reason, detail, pending.client, pending.message_id)

    # -- shutdown and reload ------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _begin_shutdown(self) -> None:
        """Stop taking requests, let workers finish what they hold (bounded), fail what waits."""
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping: %d request(s) in flight", self.pending_total)
        held = {id(p) for w in self.workers.values() for p in w.held.values()}
        self._fail_queued("the broker is stopping")
        for routed in list(self.routed):
            attempt = routed.current
            if attempt is None or attempt.finished or id(attempt.pending) not in held:
                self.dispatcher.fail(routed, "SHUTTING_DOWN", "the broker is stopping", "shutdown")
        self.call_at(time.monotonic() + SHUTDOWN_GRACE_S, self._abandon_held)
        if not self.pending_total:
            self._running = False

    def _abandon_held(self) -> None:
        message = "the broker stopped before the worker answered"
        for worker in list(self.workers.values()):
            for pending in list(worker.held.values()):
                if pending.attempt is None:
                    self._release(pending.client)
                    self._fail(pending, "SHUTTING_DOWN", message, "shutdown")
            worker.held.clear()
        # What a worker that left during the grace period gave back waits in a queue again.
        self._fail_queued(message)
        for routed in list(self.routed):
            self.dispatcher.fail(routed, "SHUTTING_DOWN", message, "shutdown")
        self._running = False

    def _fail_queued(self, message: str) -> None:
        """Answer every direct request still waiting for a worker (routed tries are the
        dispatcher's: it fails their requests as a whole)."""
        for service in self.services.values():
            for pending in [p for p in service.queue if p.attempt is None]:
                service.queue.remove(pending)
                self._release(pending.client)
                self._fail(pending, "SHUTTING_DOWN", message, reason="shutdown")

    def _close(self) -> None:
        for worker in list(self.workers.values()):
            self._disconnect(worker.identity, None)
        self._send_out()
        self.events.publish("system/health", {"event": "broker-down"})  # type: ignore[union-attr]
        self.events.close()  # type: ignore[union-attr]
        self.frontend.close()  # type: ignore[union-attr]
        os.close(self._wake_r)
        os.close(self._wake_w)
        log.info("stopped")

    def swap(self, snapshot: Snapshot, router: Router) -> None:
        """Serve ``snapshot`` from the next request on (call through :meth:`post`)."""
        old = self.router
        self.snapshot, self.router = snapshot, router
        self.decision_cache.clear()
        self.dispatcher.adopt(snapshot.plugins)
        self.counters["reloads"] += 1
        self.reload_state.update(fingerprint=snapshot.fingerprint, loadedAt=env.iso(env.utc_now()), lastReloadOk=True)
        old.close()
        log.info("reloaded: fingerprint %s", snapshot.fingerprint[:12])
        self.events.publish("system/reload", {"ok": True, "fingerprint": snapshot.fingerprint})  # type: ignore

    def reload_failed(self, errors: list[str]) -> None:
        """Keep serving the old snapshot; say why the new one was refused."""
        self.counters["reload-failures"] += 1
        self.reload_state.update(lastReloadOk=False, lastError={"at": env.iso(env.utc_now()), "errors": errors[:20]})
        log.error("reload refused, still serving %s:\n  %s", self.snapshot.fingerprint[:12], "\n  ".join(errors[:20]))
        self.events.publish("system/reload", {"ok": False, "errors": errors[:20]})  # type: ignore[union-attr]

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        services = {
            s.name: {
                "workers": len(s.workers),
                "queued": len(s.queue),
                "inflight": sum(len(w.held) for w in s.workers.values()),
                "credit": sum(w.credit for w in s.workers.values()),
                "packedWorkers": sum(w.delivery == PACKED for w in s.workers.values()),
                "batchedWorkers": sum(w.delivery == BATCHED for w in s.workers.values()),
                "requests": s.requests,
            }
            for s in self.services.values()
        }
        writers = {}
        for name, writer in (("decisions", self.decisions), ("deadLetters", self.dead_letters)):
            if writer is not None:
                writers[name] = {"written": writer.written, "dropped": writer.dropped, "errors": writer.errors[-3:]}
        if self.decisions is not None:
            recorder = self.decisions
            writers["decisions"].update(queued=recorder.queued, restarts=recorder.restarts, pid=recorder.process.pid)
        return {
            "uptimeSeconds": round(time.time() - self.started, 1),
            "pid": os.getpid(),
            "maxRssKb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "endpoints": {
                "frontend": self.settings.frontend,
                "events_pub": self.settings.events_pub,
                "events_sub": self.settings.events_sub,
            },
            "services": services,
            "workers": len(self.workers),
            "pending": self.pending_total,
            "clientsWithRequests": len(self.client_inflight),
            "counters": {**dict(self.counters), "dropped": dict(self.dropped)},
            "snapshot": {
                **self.reload_state,
                "plugins": len(self.snapshot.plugins),
                "rules": len(self.snapshot.rules.ruleset.rules),
            },
            "circuits": {name: b.to_json(time.monotonic()) for name, b in self.dispatcher.breakers.items()},
            "routedInFlight": len(self.routed),
            "events": self.events.stats() if self.events else {},
            "writers": writers,
            "limits": {
                "maxMessageBytes": self.settings.max_message_bytes,
                "clientInflight": self.settings.client_inflight,
                "serviceQueue": self.settings.service_queue,
                "totalPending": self.settings.total_pending,
            },
        }


def _seconds_left(envelope: Mapping[str, Any], settings: Settings) -> float:
    """How long the client will wait: its envelope's expiresAt, else the broker's request timeout."""
    moment = env.expires_at(envelope)
    return settings.request_timeout_s if moment is None else (moment - env.utc_now()).total_seconds()
