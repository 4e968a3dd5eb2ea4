# Long module: one Worker class; its connection, heartbeats, credit, batching, dedup and drain
# share one socket and one thread's state.
"""The Python worker SDK: serve one service on the Arbiter broker over MDP/0.1 (ZeroMQ RFC 7).

A :class:`Worker` registers a service, receives requests, runs the handler chosen by the
envelope's ``payload.command`` and sends the reply. It takes care of what every worker must
get right and nobody wants to write twice:

* heartbeats both ways; when the broker stays silent for ``liveness`` intervals the worker closes
  its socket and reconnects with exponential backoff (a restarted broker sees a fresh READY);
* at-least-once delivery made safe: requests are remembered by ``messageId`` in a bounded
  LRU together with their replies, so a duplicate (a client retry, a broker re-dispatch)
  gets the cached reply instead of running the handler a second time;
* the credit extension: with ``credit=N`` the READY declares that the broker may hand this
  worker up to N requests at once, run on a pool of N threads; plain workers hold one;
* batched delivery (on by default with credit): requests and replies travel without the MDP
  preamble, and those that meet in the broker's (or this worker's) outgoing burst share one
  message: calls into ZeroMQ per message are what a Python broker spends most of its time on.
  ``delivery="packed"`` sends one per message; ``"mdp"`` the plain form. The worker still
  reads the MDP form, so it works with any MDP/0.1 broker;
* graceful stop: in-flight requests finish and are answered, then DISCONNECT;
* several brokers (a list of endpoints, or one string of them separated by commas): one connection
  per broker, each with its own thread, socket and heartbeats, a reply going back on the
  connection its request came on, and one duplicate cache for all of them, so a request a client
  retried through another broker is answered from the cache (docs/DEPLOYMENT.md).

Typical use::

    worker = Worker("tcp://127.0.0.1:5555", "exec-automator")  # curve=CurveKeys(...) with security on
    @worker.command("analyze-document")
    def analyze(parameters, envelope):
        return {"pages": 12, "path": parameters["documentPath"]}

    worker.run()  # or worker.start() for a background thread, worker.stop() to end
"""

from __future__ import annotations

import copy
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import zmq

from arbiter.sdk.brokers import Endpoints, SeenCache, endpoint_list
from arbiter.sdk.curve import CurveKeys, connect
from arbiter.wire import envelope as env
from arbiter.wire import trace
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
    credit_frame,
    pack,
    unbatch,
    unpack,
)

log = logging.getLogger("arbiter.worker")

Handler = Callable[[dict[str, Any], dict[str, Any]], Any]
RawHandler = Callable[[list[bytes]], "bytes | list[bytes]"]

_ids = itertools.count()

STOP_LINGER_MS = 1000  # long enough for the last replies and DISCONNECT to leave, short enough not to hang
DELIVERIES = {"mdp": None, "packed": PACKED, "batched": BATCHED}  # docs/PROTOCOL.md §2.2, §5.1, §5.2


class CommandError(Exception):
    """Raise from a handler to answer with a specific error ``code`` instead of HANDLER_ERROR."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _ReplyTo:
    """Where a reply goes: the connection the request came on, its address, and its form
    ("mdp", "packed" or "batched": a request is answered in the form it came in, and the MDP
    form is understood by every broker)."""

    generation: int
    address: bytes
    form: str


@dataclass
class _Done:
    """A finished job handed from a pool thread back to the socket thread; ``forwarded``: a reply
    another connection's job computed, for a duplicate that waited on this one."""

    key: str | None
    to: _ReplyTo
    reply: list[bytes]
    forwarded: bool = False


class Worker:
    """Serves ``service`` on the broker at ``endpoint``; see the module docstring."""

    def __init__(
        self,
        endpoint: Endpoints,
        service: str,
        credit: int = 1,
        *,
        delivery: str | None = None,
        heartbeat_interval: float = 2.5,
        liveness: int = 3,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        dedup_size: int = 1024,
        drain_timeout: float = 10.0,
        context: zmq.Context | None = None,
        internal: bool = False,
        curve: CurveKeys | None = None,
    ) -> None:
        """``internal``: serve a name of the broker's own (``arbiter.*``), as only the processes a
        broker starts itself may (its deciders); the broker refuses anyone else."""
        if credit < 1:
            raise ValueError("credit must be at least 1")
        if service.startswith(RESERVED_PREFIXES) and not internal:
            raise ValueError(f"service names starting with {' or '.join(RESERVED_PREFIXES)} belong to the broker")
        self.endpoints = endpoint_list(endpoint)
        self.endpoint = self.endpoints[0]  # this connection's broker; the others get links of their own
        self.curve = curve if curve is not None else CurveKeys.from_env()  # a broker with security on
        self.service = service
        self.credit = credit
        if delivery is None:
            delivery = "batched" if credit > 1 else "mdp"
        if delivery not in DELIVERIES:
            raise ValueError(f"delivery must be one of {', '.join(DELIVERIES)}, not {delivery!r}")
        self.delivery = delivery
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.dedup_size = dedup_size
        self.drain_timeout = drain_timeout
        self.executed = 0
        self.duplicates = 0
        self.connections = 0
        self.unsent = 0  # messages dropped because no connection could take them
        self._handlers: dict[str, Handler] = {}
        self._raw: RawHandler | None = None
        self._ctx = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._generation = 0
        self._seen = SeenCache(dedup_size)  # shared with the links to the other brokers
        self._links: list[Worker] = []
        self._inflight = 0
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._batch: list[bytes] = []  # batched replies (token + body) that leave together
        self._wake_address = f"inproc://arbiter-worker-wake-{id(self)}-{next(_ids)}"
        self._wake_lock = threading.Lock()
        self._wake_tx: zmq.Socket | None = None  # made by run(); stop() may come before that
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # -- registration -------------------------------------------------------------------

    def command(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: ``handler(parameters, envelope)`` answers requests whose payload.command is ``name``."""

        def register(handler: Handler) -> Handler:
            self._handlers[name] = handler
            return handler

        return register

    def raw(self, handler: RawHandler) -> RawHandler:
        """Decorator: ``handler(frames)`` answers bodies that are not envelopes (plain MDP traffic)."""
        self._raw = handler
        return handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run in a daemon thread; returns it."""
        self._thread = threading.Thread(target=self.run, name=f"worker-{self.service}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Finish in-flight requests, send DISCONNECT and return once the loop has ended."""
        self._stopping.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout if timeout is not None else self.drain_timeout + 5)

    def counts(self) -> dict[str, int]:
        """Requests executed, duplicates answered from the cache, connections made and messages
        unsent, over the connections to every broker."""
        links = [self, *self._links]
        names = ("executed", "duplicates", "connections", "unsent")
        return {name: sum(getattr(link, name) for link in links) for name in names}

    def run(self) -> None:
        """Serve until :meth:`stop`; reconnects with exponential backoff after a broker loss. With
        several brokers, the others are served by links started here and stopped with this one."""
        if len(self.endpoints) > 1 and not self._links:
            self._links = [self._link(endpoint) for endpoint in self.endpoints[1:]]
            for link in self._links:
                link.start()
        try:
            self._serve()
        finally:
            for link in self._links:
                link._stopping.set()
                link._wake()
            for link in self._links:
                link.stop()

    def _link(self, endpoint: str) -> Worker:
        """This worker on one more broker: the same handlers, options and duplicate cache (a copy,
        so that a subclass's own attributes come along), with a connection and a thread of its own."""
        link = copy.copy(self)
        link.endpoint, link.endpoints, link._links = endpoint, [endpoint], []
        link.executed = link.duplicates = link.connections = link.unsent = 0
        link._socket, link._generation, link._inflight, link._batch = None, 0, 0, []
        link._done = queue.SimpleQueue()
        link._wake_address = f"inproc://arbiter-worker-wake-{id(link)}-{next(_ids)}"
        link._wake_lock, link._wake_tx = threading.Lock(), None
        link._stopping, link._stopped, link._thread = threading.Event(), threading.Event(), None
        return link

    def _serve(self) -> None:
        """One connection's life: serve, reconnect, drain and say goodbye."""
        wake_rx = self._ctx.socket(zmq.PAIR)
        wake_rx.bind(self._wake_address)
        self._wake_tx = wake_tx = self._ctx.socket(zmq.PAIR)
        wake_tx.connect(self._wake_address)
        pool = ThreadPoolExecutor(max_workers=self.credit, thread_name_prefix=f"{self.service}-job")
        delay = self.reconnect_initial
        try:
            while not self._stopping.is_set():
                heard = self._serve_connection(wake_rx, pool)
                if self._stopping.is_set():
                    break
                delay = self.reconnect_initial if heard else min(delay * 2, self.reconnect_max)
                log.info("worker %s: broker lost, reconnecting in %.2fs", self.service, delay)
                self._stopping.wait(delay)
            self._drain(wake_rx)
            self._send_command(DISCONNECT)
            self._close_socket(linger_ms=STOP_LINGER_MS)  # linger 0 could drop DISCONNECT unsent
        finally:
            self._close_socket()
            pool.shutdown(wait=False, cancel_futures=True)
            with self._wake_lock:
                wake_tx.close(linger=0)
            wake_rx.close(linger=0)
            self._stopped.set()

    # -- one connection -----------------------------------------------------------------

    def _open(self) -> None:
        """A fresh DEALER and a READY: after a broker restart the broker knows nothing of us."""
        self._close_socket()
        self._generation += 1
        self._batch = []  # replies for the old connection: the broker now would not know their tokens
        self.connections += 1
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        connect(sock, self.endpoint, self.curve)
        self._socket = sock
        ready = [b"", MDPW01, READY, self.service.encode()]
        word = DELIVERIES[self.delivery]
        if self.credit > 1 or word:
            ready.append(credit_frame(self.credit))
        if word:
            ready.append(word)
        sock.send_multipart(ready)

    def _close_socket(self, linger_ms: int = 0) -> None:
        """Reconnects close with linger 0: anything still queued was meant for a broker that is gone."""
        if self._socket is not None:
            self._socket.close(linger=linger_ms)
            self._socket = None

    def _serve_connection(self, wake_rx: zmq.Socket, pool: ThreadPoolExecutor) -> bool:
        """Serve one connection until the broker goes silent, disconnects us, or we stop.

        Returns whether the broker accepted us (said anything but DISCONNECT), which decides the
        backoff: a broker that keeps refusing the READY is retried ever more slowly.
        """
        self._open()
        assert self._socket is not None
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(wake_rx, zmq.POLLIN)
        heard = False
        last_heard = time.monotonic()
        next_heartbeat = last_heard + self.heartbeat_interval
        while not self._stopping.is_set():
            wait_ms = max(0, int((next_heartbeat - time.monotonic()) * 1000)) + 1
            events = dict(poller.poll(wait_ms))
            if self._socket in events:
                while self._socket.poll(0, zmq.POLLIN):
                    if not self._on_message(self._socket.recv_multipart(), pool):
                        return heard
                    heard = True
                last_heard = time.monotonic()
            if wake_rx in events:
                self._drain_wakeups(wake_rx)
            self._flush()
            now = time.monotonic()
            if now >= next_heartbeat:
                self._send_command(HEARTBEAT)
                next_heartbeat = now + self.heartbeat_interval
            if now - last_heard > self.heartbeat_interval * self.liveness:
                return heard
        return heard

    def _on_message(self, frames: list[bytes], pool: ThreadPoolExecutor) -> bool:
        """Handle one broker command; False means the broker told us to go (DISCONNECT)."""
        if frames and frames[0] and self.delivery != "mdp":  # packed or batched: no delimiter, no header
            try:
                if self.delivery == "batched":
                    requests = [(token, [body]) for token, body in unbatch(frames)]
                else:
                    requests = [unpack(frames)]
            except ProtocolError:
                log.warning("worker %s: dropping a %s request too short for its token", self.service, self.delivery)
                return True
            for address, body in requests:
                self._on_request(_ReplyTo(self._generation, address, self.delivery), body, pool)
            return True
        if len(frames) < 3 or frames[0] != b"" or frames[1] != MDPW01:
            log.warning("worker %s: dropping a malformed message (%d frames)", self.service, len(frames))
            return True
        command = frames[2]
        if command == REQUEST and len(frames) >= 6 and frames[4] == b"":
            self._on_request(_ReplyTo(self._generation, frames[3], "mdp"), frames[5:], pool)
        elif command == DISCONNECT:
            log.info("worker %s: broker sent DISCONNECT", self.service)
            return False
        elif command != HEARTBEAT:
            log.warning("worker %s: unexpected command %r", self.service, command)
        return True

    # -- requests -----------------------------------------------------------------------

    def _on_request(self, to: _ReplyTo, body: list[bytes], pool: ThreadPoolExecutor) -> None:
        envelope = env.as_envelope(body[0]) if len(body) == 1 else None
        if envelope is None:
            self._submit(pool, None, to, lambda: self._run_raw(body))
            return
        key = envelope["messageId"]
        new, reply = self._seen.claim(key, (self, to))
        if not new:
            self.duplicates += 1
            if reply is not None:
                self._send_reply(to, reply)
            return
        self._submit(pool, key, to, lambda: self._run_command(envelope))

    def _submit(self, pool: ThreadPoolExecutor, key: str | None, to: _ReplyTo, job: Callable[[], list[bytes]]) -> None:
        self._inflight += 1

        def work() -> None:
            try:
                reply = job()
            except Exception as exc:  # a bug in our own wrapping; the handler's errors are caught inside
                log.exception("worker %s: job failed", self.service)
                reply = [str(exc).encode()]
            self._done.put(_Done(key, to, reply))
            self._wake()

        pool.submit(work)

    def _run_command(self, request: dict[str, Any]) -> list[bytes]:
        """Run the handler for ``payload.command`` and wrap its result (or failure) in a reply envelope."""
        payload = request.get("payload") or {}
        name = payload.get("command")
        handler = self._find_handler(name)
        if env.is_expired(request):
            reply = env.error_reply(request, self.service, "EXPIRED", "the request expired before it was run")
        elif handler is None:
            known = ", ".join(self.commands) or "none"
            reply = env.error_reply(
                request,
                self.service,
                "UNKNOWN_COMMAND",
                f"service '{self.service}' has no command {name!r} (known: {known})",
            )
        else:
            reply = self._call(handler, request, payload)
        return [env.encode(reply)]

    def _call(self, handler: Handler, request: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        parameters = payload.get("parameters")
        headers = request.get("headers")  # the handler's own requests join this trace (trace.current)
        token = trace.current.set(trace.from_headers(headers if isinstance(headers, dict) else None))
        try:
            result = handler(parameters if isinstance(parameters, dict) else {}, request)
            return env.success_reply(request, self.service, result)
        except CommandError as exc:
            return env.error_reply(request, self.service, exc.code, exc.message)
        except Exception as exc:
            log.exception("worker %s: handler for %r failed", self.service, payload.get("command"))
            return env.error_reply(request, self.service, "HANDLER_ERROR", f"{type(exc).__name__}: {exc}")
        finally:
            trace.current.reset(token)

    def _find_handler(self, name: Any) -> Handler | None:
        """Exact name first, then ignoring a ``prefix:`` on either side (``jira:work`` ~ ``work``)."""
        if not isinstance(name, str):
            return None
        if name in self._handlers:
            return self._handlers[name]
        bare = name.split(":")[-1]
        for known, handler in self._handlers.items():
            if known.split(":")[-1] == bare:
                return handler
        return None

    def _run_raw(self, body: list[bytes]) -> list[bytes]:
        if self._raw is None:
            reply = env.error_reply(
                {}, self.service, "BAD_REQUEST", f"service '{self.service}' only accepts JSON envelopes"
            )
            return [env.encode(reply)]
        try:
            out = self._raw(body)
        except Exception as exc:
            log.exception("worker %s: raw handler failed", self.service)
            return [env.encode(env.error_reply({}, self.service, "HANDLER_ERROR", f"{type(exc).__name__}: {exc}"))]
        return [out] if isinstance(out, bytes) else list(out)

    # -- replies ------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the replies the pool finished (batched ones in one message); remember envelope
        replies for duplicates."""
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                self._send_batch()
                return
            if done.forwarded:
                self._send_reply(done.to, done.reply)
                continue
            self._inflight -= 1
            self.executed += 1
            if done.key is None:
                self._send_reply(done.to, done.reply)
                continue
            # Only results are kept for duplicates: a retry after an error must run again.
            for link, to in self._seen.finish(done.key, done.reply, keep=not _is_error(done.reply)):
                if link is self:
                    self._send_reply(to, done.reply)
                else:
                    link._forward(to, done.reply)

    def _forward(self, to: _ReplyTo, reply: list[bytes]) -> None:
        """From another link's thread: a reply for a duplicate that came on this connection; this
        link's own thread sends it, since a ZeroMQ socket belongs to one thread."""
        self._done.put(_Done(None, to, reply, forwarded=True))
        self._wake()

    def _send_reply(self, to: _ReplyTo, body: list[bytes]) -> None:
        """A reply for an earlier connection would reach a broker that no longer knows the
        request; the client's retry will find it in the cache instead."""
        if self._socket is None or to.generation != self._generation:
            return
        if to.form == "batched" and len(body) == 1:
            self._batch.append(to.address + body[0])
        elif to.form == "packed" and body:
            self._put(pack(to.address, body))
        else:  # and a batched worker's reply of several frames, or none: a batch frame holds one
            self._put([b"", MDPW01, REPLY, to.address, b"", *body])

    def _send_batch(self) -> None:
        """The batched replies gathered since the last call, as one message (only replies for the
        current connection are gathered: :meth:`_send_reply` checks, :meth:`_open` starts afresh)."""
        if self._batch and self._socket is not None:
            self._put(self._batch)
        self._batch = []

    def _send_command(self, command: bytes) -> None:
        if self._socket is not None:
            self._put([b"", MDPW01, command])

    def _put(self, frames: list[bytes]) -> None:
        """Never block: with no connection to take it (a broker that refused our key, or is gone)
        a send would wait forever and ``stop`` with it; the broker's silence makes us reconnect."""
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK)  # type: ignore[union-attr]
        except zmq.Again:
            self.unsent += 1

    def _drain(self, wake_rx: zmq.Socket) -> None:
        """On stop: finish in-flight jobs (bounded) and reply before DISCONNECT, heartbeating: a broker
        that heard nothing for its liveness window would hand what we finish to another worker."""
        deadline = time.monotonic() + self.drain_timeout
        next_heartbeat = time.monotonic() + self.heartbeat_interval
        while self._inflight > 0 and time.monotonic() < deadline:
            if wake_rx.poll(100, zmq.POLLIN):
                self._drain_wakeups(wake_rx)
            self._flush()
            if time.monotonic() >= next_heartbeat:
                self._send_command(HEARTBEAT)
                next_heartbeat = time.monotonic() + self.heartbeat_interval

    def _wake(self) -> None:
        with self._wake_lock:
            tx = self._wake_tx
            if tx is not None and not tx.closed:
                try:
                    tx.send(b"", zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass

    @staticmethod
    def _drain_wakeups(wake_rx: zmq.Socket) -> None:
        while wake_rx.poll(0, zmq.POLLIN):
            wake_rx.recv()

    def __repr__(self) -> str:
        return f"Worker(service={self.service!r}, endpoint={self.endpoint!r}, credit={self.credit})"


def _is_error(reply: list[bytes]) -> bool:
    envelope = env.as_envelope(reply[0]) if len(reply) == 1 else None
    return bool(envelope) and (envelope.get("payload") or {}).get("status") == "error"
