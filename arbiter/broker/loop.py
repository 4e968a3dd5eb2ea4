"""The broker: one ROUTER speaking MDP/0.1 to clients and workers, the event bus, and the loop
that serves them.

Everything socket-related runs on one thread, the loop in :meth:`Broker.run`: poll, read a
message, hand it to the part that owns it (a client request: admission, then a worker pool's
queue, one of Arbiter's own services or MMI; a worker's message: the pool), and send what they
produced in bursts from the outbox. Other threads (the reloader, signal handlers) talk to the
loop only through :meth:`Broker.post`, which queues a callable and wakes the loop through a
pipe. So no lock guards the broker's state, and a snapshot swap happens between two messages.

The hot path of a direct request reads three frames and forwards the body as bytes: bodies are
decoded only when a request has to wait (to learn its deadline and id) or is addressed to one
of Arbiter's own services.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import time
from collections import Counter, deque
from functools import partial
from typing import Any, Callable

import zmq

from arbiter.broker import deciders, keepers, shutdown
from arbiter.broker import messages as svc
from arbiter.broker.admission import Admission
from arbiter.broker.chains import ChainDesk
from arbiter.broker.clients import Clients
from arbiter.broker.decision_cache import DecisionCache
from arbiter.broker.dispatch import Dispatcher
from arbiter.broker.events import EventHub
from arbiter.broker.guard import Guard
from arbiter.broker.helpers import HelperGroup
from arbiter.broker.host import HostParts
from arbiter.broker.metrics import Meter
from arbiter.broker.reload import ReloadRecord
from arbiter.broker.services.catalog import OWN_SERVICES
from arbiter.broker.settings import Settings
from arbiter.broker.workers import WorkerPool, WorkerState
from arbiter.project.snapshot import Snapshot
from arbiter.routing.match import Health, health_of
from arbiter.routing.parameters import BindingTable
from arbiter.routing.pipeline import Router
from arbiter.security.config import security_of
from arbiter.store.recorder import Recorder
from arbiter.wire.frames import has_input, recv_frames, recv_frames_from, send_frames
from arbiter.wire.mdp import BATCHED, MDPC01, MDPW01, ProtocolError, parse

log = logging.getLogger("arbiter.broker")

POLLIN = int(zmq.POLLIN)
MAX_BATCH = 256  # messages read per socket before looking at the others again
MIN_FLUSH_S = 0.01  # batch_ms may be 0 ("at once"): the loop still only flushes this often
TICK_S = 0.1  # how often deadlines (tries, queued requests) and circuit timers are looked at
OUTBOX_BATCH = 16  # messages the loop gathers before sending them in one burst (see Broker.send)
OUTBOX_WAIT_S = 0.0005  # ... and how long the first of them may wait for the others


class Broker(HostParts):
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
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.metrics = Meter((*OWN_SERVICES, deciders.SERVICE, keepers.SERVICE), snapshot.plugins)
        self.metrics_server: Any = None  # metrics_http.MetricsServer when /metrics is served (daemon)
        self.admission = Admission(settings)
        self.clients = Clients(self)
        self.pool = WorkerPool(self, self.clients, settings)
        self.decision_cache = DecisionCache()
        self.health: dict[str, Health] = {}
        self.rates: dict[str, float] = {}  # plugin -> learned success rate (the recorder's word)
        self.reloads = ReloadRecord(snapshot.fingerprint, self.counters)
        self.started = time.time()
        self.frontend: zmq.Socket | None = None
        self.events: EventHub | None = None
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._posted: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._running = False
        self._stopping = False
        self._next_heartbeat = 0.0  # monotonic time of the next round of heartbeats
        self.dispatcher = Dispatcher(self, settings.attempt_timeout_s)
        self.dispatcher.adopt(snapshot.plugins, BindingTable(snapshot.rules.bindings), router.max_text_chars)
        self.chains = ChainDesk(self)
        # frames to send, the worker they go to (dropped when unreachable), what to count if they fail
        self._outbox: deque[tuple[list[bytes], WorkerState | None, str | None]] = deque()
        self._outbox_since = 0.0  # when the oldest message in the outbox was queued
        # the open message to each batched worker, still in the outbox, which further requests join
        self._batches: dict[bytes, tuple[WorkerState, list[bytes]]] = {}
        self.deciders: HelperGroup | None = None
        self.guard: Guard | None = None  # security on the bus (configs/security.yaml), when on
        self.user = ""  # with security on: the identity that sent the message being handled
        self.keepers: HelperGroup | None = None
        self.unserved: tuple[str, ...] = ()  # the project's plugins no live worker serves
        self._hub_moved = False  # the event bus's subscriber socket was replaced (security reload)
        self._new_health()

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
        secure = may_publish = may_subscribe = None
        if self.guard is not None:
            self.guard.start(self.ctx)
            self.guard.secure(self.frontend)
            secure, may_publish, may_subscribe = self.guard.secure, self.guard.may_publish, self.guard.may_subscribe
        self.frontend.bind(s.frontend)
        self.events = EventHub(
            self.ctx, s.events_pub, s.events_sub, secure=secure, may_publish=may_publish, may_subscribe=may_subscribe
        )
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
        self.post(lambda: shutdown.begin(self))

    def run(self) -> None:
        """Serve until :meth:`stop`; then answer or dead-letter what is in flight and close."""
        if self.frontend is None:
            self.bind()
        assert self.frontend is not None and self.events is not None
        # Sleep on the sockets' ZMQ_FDs with a plain poll(2): zmq_poll asks every socket for its
        # ZMQ_EVENTS before and after each sleep, two system calls per socket each time.
        sleeper = select.poll()
        hub_fds = set(self.events.fds())
        for fd in (self.frontend.getsockopt(zmq.FD), *hub_fds, self._wake_r):
            sleeper.register(fd, select.POLLIN)
        next_tick = time.monotonic() + TICK_S
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
            if self._hub_moved:  # the subscribers' socket was opened anew: sleep on its descriptor
                hub_fds = self._watch_hub(sleeper, hub_fds)
            fired = [fd for fd, _ in sleeper.poll(timeout_ms)]
            # Messages first: a request on its way to a worker should not wait for bookkeeping.
            more = self._drain_frontend()
            if self.pool.lost and not more:  # what the lost workers said last is read: hand on the rest
                self._guarded(self.pool.forget_unreachable)
            if self.events.touched or not hub_fds.isdisjoint(fired):
                more = self._drain_events() or more
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
                self._guarded(partial(self._housekeeping, now))
                next_tick = now + TICK_S
                more = True
            if self._outbox:
                self._guarded(self.flush)
                more = True
        self.close()

    def _run_posted(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self._posted:
            self._guarded(self._posted.popleft())

    def _watch_hub(self, sleeper: select.poll, old: set[int]) -> set[int]:
        self._hub_moved = False
        for fd in old:
            sleeper.unregister(fd)
        fds = set(self.events.fds())  # type: ignore[union-attr]
        for fd in fds:
            sleeper.register(fd, select.POLLIN)
        return fds

    def _drain_events(self) -> bool:
        """The event bus's turn; like a message, a failure there is logged and counted, and the
        bus is looked at again on the next pass."""
        try:
            return self.events.drain(MAX_BATCH)  # type: ignore[union-attr]
        except Exception:
            log.exception("internal error on the event bus")
            self.counters["internal-errors"] += 1
            return True

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
        if recorder.learned != self.rates:  # the registry learned: routing sees a rate that moved a step
            self.rates = dict(recorder.learned)
            self._new_health()
        self.call_at(time.monotonic() + max(MIN_FLUSH_S, recorder.interval_s), self._flush_decisions)

    def _new_health(self) -> None:
        """Circuits, learned rates or the plugins with live workers changed: decisions made under
        the old health are forgotten."""
        self.unserved = tuple(name for name in self.snapshot.plugins if not self.pool.has_workers(name))
        health = health_of(self.dispatcher.circuits(), self.rates, self.unserved)
        if health != self.health:
            self.health = health
            self.decision_cache.clear()

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the loop thread at monotonic time ``when`` (loop thread only)."""
        heapq.heappush(self.timers, (when, next(self._timer_ids), action))

    def _housekeeping(self, now: float) -> None:
        """Overdue tries, expired requests and circuit timers every tick; heartbeats and silent
        workers once per heartbeat interval. Deadlines are checked by scanning what is in flight
        rather than with a timer per request, which would pile up at high rates."""
        self.dispatcher.check_deadlines(now)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_s
            self.pool.heartbeat(now)
        self.dispatcher.tick(now)
        self.pool.expire(now)
        if not self._stopping:
            for group in (self.deciders, self.keepers):
                if group is not None:
                    group.watch()
        if self._stopping and not self.admission.pending_total:
            self._running = False

    def end(self) -> None:
        """Leave the loop after this round (shutdown calls it when nothing is left in flight)."""
        self._running = False

    def close(self) -> None:
        """After the loop ended: say goodbye to workers, send what is left, close the sockets."""
        for worker in list(self.pool.workers.values()):
            self.pool.disconnect(worker.identity, None)
        self.flush()
        self.events.publish("system/health", {"event": "broker-down"})  # type: ignore[union-attr]
        self.events.close()  # type: ignore[union-attr]
        self.frontend.close()  # type: ignore[union-attr]
        if self.guard is not None:
            self.guard.stop()
        os.close(self._wake_r)
        os.close(self._wake_w)
        log.info("stopped")

    @property
    def stopping(self) -> bool:
        return self._stopping

    def begin_stopping(self) -> None:
        self._stopping = True

    def swap(self, snapshot: Snapshot, router: Router) -> None:
        """Serve ``snapshot`` from the next request on (call through :meth:`post`)."""
        old, self.snapshot, self.router = self.router, snapshot, router
        self.decision_cache.clear()
        self.dispatcher.adopt(snapshot.plugins, BindingTable(snapshot.rules.bindings), router.max_text_chars)
        self.metrics.adopt(snapshot.plugins)
        self._new_health()
        old.close()
        if self.guard is not None and self.guard.adopt(security_of(snapshot)[0]) and self.events is not None:
            self.events.reopen_subscribers()  # every subscription judged again, under the new rules
            self._hub_moved = True
        self.publish("system/reload", self.reloads.swapped(snapshot.fingerprint))

    def reload_failed(self, errors: list[str]) -> None:
        self.publish("system/reload", self.reloads.refused(errors))

    def reload_restored(self, fingerprint: str) -> None:
        self.publish("system/reload", self.reloads.restored(fingerprint))

    # -- the frontend -------------------------------------------------------------------

    def _drain_frontend(self) -> bool:
        """Handle what the frontend holds; True when the batch ran out before the socket did.
        Reading until a read fails is what lets the loop sleep on the socket's edge-triggered FD:
        a failed read arms it to signal the next message, as a ZMQ_EVENTS check would, and costs
        less when messages stream in. After the first message of a drain the check is made
        instead: when that message came alone, as with one request at a time, no read fails
        (a failed read raises, and the exception is dear)."""
        sock = self.frontend
        for count in range(MAX_BATCH):
            try:
                if self.guard is None:
                    frames = recv_frames(sock)
                else:
                    frames, self.user = recv_frames_from(sock)
            except zmq.Again:
                if not self._outbox:
                    return False
                self._guarded(self.flush)  # input ran dry: answer now, then read again (re-arms the FD)
                continue
            try:
                if self.guard is None or not self._refused(frames):
                    self.handle(frames)
            except Exception:  # one bad message must never stop the broker
                log.exception("internal error on a message of %d frames", len(frames))
                self.dropped["internal-error"] += 1
                self._internal_error_reply(frames)
            if self._outbox and (not count or time.monotonic() - self._outbox_since >= OUTBOX_WAIT_S):
                # a lone request (no stream yet) must not wait for the failed read, nor any
                # message for a stream of slow ones (say, new texts to route) to run dry
                self._guarded(self.flush)
            if not count and not self._outbox and not has_input(sock):  # type: ignore[arg-type]
                return False
        return True

    def _refused(self, frames: list[bytes]) -> bool:
        """Whether the rules refuse the message (then it is answered here)."""
        refusal = self.guard.admits(frames, self.user)  # type: ignore[union-attr]
        if refusal is None:
            return False
        if refusal.what == "forbidden-call":
            self.clients.send_client(frames[0], frames[3], [refusal.answer()])
        else:
            self.pool.disconnect(frames[0], None)
        return True

    def handle(self, frames: list[bytes]) -> None:
        """One message from the frontend: a client's request, a worker's command or reply."""
        if len(frames) >= 4 and not frames[1]:
            header = frames[2]
            if header == MDPC01:
                self.clients.on_request(frames[0], frames[3], frames[4:])
                return
            if header == MDPW01:
                self.pool.on_command(frames[0], frames[3], frames[4:])
                return
        elif len(frames) >= 2 and frames[1]:
            worker = self.pool.workers.get(frames[0])
            if worker is not None and worker.delivery:  # only a packed or batched reply lacks the delimiter
                if worker.delivery == BATCHED:
                    self.pool.on_batched_reply(worker, frames[1:])
                else:
                    self.pool.on_packed_reply(worker, frames[1:])
                return
        self._malformed(frames)

    def _internal_error_reply(self, frames: list[bytes]) -> None:
        if len(frames) >= 4 and frames[2] == MDPC01:
            message = "the broker failed on this request; it is logged"
            self.clients.send_client(frames[0], frames[3], [svc.error_body(frames[4:], "INTERNAL_ERROR", message)])

    def _malformed(self, frames: list[bytes]) -> None:
        """Count why a message was unreadable. It gets no reply: without the delimiter and the
        protocol header the broker cannot tell a client from a worker, nor frame an answer."""
        try:
            parse(frames)
        except ProtocolError as exc:
            self.dropped[exc.reason] += 1

    # -- sending ------------------------------------------------------------------------

    @property
    def outbox(self) -> list[tuple[list[bytes], WorkerState | None, str | None]]:
        """What waits to be sent: (frames, the worker they go to, the drop reason if they fail)."""
        return list(self._outbox)

    def send(self, frames: list[bytes], worker: WorkerState | None = None, drop: str | None = None) -> None:
        """Send ``frames`` soon, in order: with the next burst of ``OUTBOX_BATCH`` messages, once
        the oldest has waited ``OUTBOX_WAIT_S`` while input keeps coming, else when input runs dry.
        A message sent to an idle pipe costs a system call to wake libzmq's I/O thread; in a burst,
        most join a pipe it is already draining (docs/PERFORMANCE.md). ``worker``: removed when
        unreachable (what it holds handed on); ``drop``: counted when the message cannot be sent."""
        if not self._outbox:
            self._outbox_since = time.monotonic()
        self._outbox.append((frames, worker, drop))
        if len(self._outbox) >= OUTBOX_BATCH:
            self._guarded(self.flush)

    def send_batched(self, worker: WorkerState, item: bytes) -> None:
        """Add one request (token + body) to the message the outbox holds for batched ``worker``,
        or start one: one round of calls into ZeroMQ per message saved, here and on the worker."""
        open_batch = self._batches.get(worker.identity)
        if open_batch is not None and open_batch[0] is worker:
            open_batch[1].append(item)
            return
        frames = [worker.identity, item]
        self._batches[worker.identity] = (worker, frames)
        self.send(frames, worker, "worker-unreachable")

    def flush(self) -> None:
        """Send the outbox in order. The loop runs this guarded: should it fail half-way (say,
        handing on what an unreachable worker held), the rest goes with the next call.

        A batch is closed as it leaves, not when this starts: handing on what an unreachable
        worker held runs in here and may open a batch for another worker, which this same call
        sends; a request joining it afterwards would never be sent."""
        outbox, sock, batches, workers = self._outbox, self.frontend, self._batches, self.pool.workers
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
                if worker is not None and workers.get(worker.identity) is worker and worker not in self.pool.lost:
                    self.counters["workers-unreachable"] += 1
                    self.pool.unreachable(worker)
