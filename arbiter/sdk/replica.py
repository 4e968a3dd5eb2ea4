"""Keep one replicated value (a CRDT of :mod:`arbiter.state.crdt`) in step between processes,
over the broker's event bus.

Each :class:`Replica` publishes its whole state on its topic (``state/crdt/<name>`` unless
given) after every local change and again every ``sync_interval`` seconds, and merges every
state it receives. Publishing whole states is what makes the bus's at-most-once delivery
enough: a lost message is made good by the next one, a duplicate or late one merges to
nothing new, and a replica that starts late catches up at the next periodic publish.

Typical use::

    with Replica("visits", PNCounter(), "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557", "node-a") as visits:
        visits.update(lambda counter: counter.increment("node-a"))
        visits.wait_for(lambda counter: counter.value() >= 3, timeout=5)
        print(visits.value.value())
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Generic, TypeVar

import zmq

from arbiter.state.crdt import Crdt, from_json
from arbiter.wire import envelope as env

log = logging.getLogger("arbiter.replica")

C = TypeVar("C", bound=Crdt)

TOPIC_PREFIX = "state/crdt/"
DEFAULT_SYNC_INTERVAL = 1.0
SYNC_INTERVAL_RANGE = (0.01, 3600.0)  # faster floods the bus; slower leaves a missed state unrepaired too long
POLL_MS = 100  # longest wait for input, so close() is seen promptly
DRAIN_BATCH = 256  # states merged per pass: a backlog is folded under one lock, not one at a time
PUBLISH_LINGER_MS = 500  # on close, time for the last state to leave
JOIN_TIMEOUT_S = 5.0


class Replica(Generic[C]):
    """One CRDT value shared by every replica on the same topic. Thread-safe: a background thread
    reads the bus and merges; :meth:`update` may be called from any thread."""

    def __init__(
        self,
        name: str,
        crdt: C,
        events_pub: str,
        events_sub: str,
        node_id: str,
        topic: str | None = None,
        *,
        sync_interval: float = DEFAULT_SYNC_INTERVAL,
        context: zmq.Context | None = None,
    ) -> None:
        _check_arguments(name, crdt, node_id, topic, sync_interval)
        self.name = name
        self.node_id = node_id
        self.topic = topic or f"{TOPIC_PREFIX}{name}"
        self.sync_interval = sync_interval
        self.source = f"replica/{node_id}"
        self.published = self.merged = self.rejected = 0
        self._value = crdt
        self._changed = threading.Condition()  # guards the value; notified on every change
        self._send_lock = threading.Lock()  # the PUB socket is used from the caller's and the background thread
        self._stop = threading.Event()
        self._closed = False
        ctx = context or zmq.Context.instance()
        self._pub = _socket(ctx, zmq.PUB, events_pub, PUBLISH_LINGER_MS)
        self._sub = _socket(ctx, zmq.SUB, events_sub, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        self._thread = threading.Thread(target=self._run, name=f"replica-{name}", daemon=True)
        self._thread.start()

    # -- the value ------------------------------------------------------------------------

    @property
    def value(self) -> C:
        """The current state; immutable, so it may be kept and read without the lock."""
        with self._changed:
            return self._value

    def update(self, change: Callable[[C], C]) -> C:
        """Apply a local change (``change`` gets the state and returns the new one), then publish."""
        if self._closed:
            raise RuntimeError(f"replica {self.name!r} is closed")
        with self._changed:
            new = change(self._value)
            if type(new) is not type(self._value):
                raise TypeError(f"the change returned {type(new).__name__}, not {type(self._value).__name__}")
            self._value = new
            self._changed.notify_all()
        self.publish()
        return new

    def merge(self, state: C) -> C:
        """Fold in a state that came some other way (a file, the store); not published at once."""
        with self._changed:
            self._value = self._value.merge(state)
            self._changed.notify_all()
            return self._value

    def wait_for(self, predicate: Callable[[C], Any], timeout: float) -> bool:
        """Whether the value satisfies ``predicate`` within ``timeout`` seconds (checked on every change)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._value), timeout)

    # -- the bus --------------------------------------------------------------------------

    def publish(self) -> None:
        """Send the whole current state now."""
        with self._changed:
            state = self._value
        body = env.encode(self._envelope(state))
        with self._send_lock:
            if self._closed:
                raise RuntimeError(f"replica {self.name!r} is closed")
            self._pub.send_multipart([self.topic.encode(), body])
            self.published += 1

    def _envelope(self, state: Crdt) -> dict[str, Any]:
        return {
            "messageId": env.new_id(),
            "timestamp": env.now_iso(),
            "source": self.source,
            "destination": "*",
            "topic": self.topic,
            "messageType": "event",
            "priority": env.DEFAULT_PRIORITY,
            "headers": {},
            "payload": {"replica": self.name, "node": self.node_id, "state": state.to_json()},
        }

    def _run(self) -> None:
        """Read the bus and publish periodically until closed. The first publish is at once, so
        peers learn this replica's state without waiting a whole interval."""
        next_sync = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_sync:
                self._publish_quietly()
                next_sync = now + self.sync_interval
            wait_ms = min(POLL_MS, max(0, int((next_sync - now) * 1000)))
            try:
                if self._sub.poll(wait_ms):
                    self._drain()
            except zmq.ZMQError:
                if not self._stop.is_set():
                    log.exception("replica %s: reading the event bus failed", self.name)
                return

    def _publish_quietly(self) -> None:
        try:
            self.publish()
        except (zmq.ZMQError, RuntimeError) as exc:
            if not self._stop.is_set():
                log.warning("replica %s: periodic publish failed: %s", self.name, exc)

    def _drain(self) -> None:
        """Merge what the SUB socket holds. States are parsed outside the lock, then folded in one go."""
        incoming: list[Crdt] = []
        for _ in range(DRAIN_BATCH):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            state = self._read(frames)
            if state is not None:
                incoming.append(state)
        if incoming:
            with self._changed:
                for state in incoming:
                    self._value = self._value.merge(state)
                self.merged += len(incoming)
                self._changed.notify_all()

    def _read(self, frames: list[bytes]) -> Crdt | None:
        """The state in one message, or None: own echoes, wildcard copies and other topics under the
        same prefix are skipped; anything malformed or of another type is counted and logged."""
        data = env.as_envelope(frames[1]) if len(frames) >= 2 else None
        if data is None or data.get("topic") != self.topic or data.get("messageType") != "event":
            return None
        if data.get("source") == self.source:
            return None
        try:
            state = from_json(data["payload"].get("state"))
        except ValueError as exc:
            return self._reject(data, str(exc))
        if type(state) is not type(self._value):  # the type never changes, so no lock is needed
            return self._reject(data, f"a {state.kind} where a {self._value.kind} is kept")
        return state

    def _reject(self, data: dict[str, Any], why: str) -> None:
        """Count and log a state that cannot be merged; one bad publisher must not stop the others."""
        self.rejected += 1
        log.warning("replica %s: ignored a state from %s: %s", self.name, data.get("source"), why)

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread and close the sockets; a second call does nothing."""
        if self._closed:
            return
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        with self._send_lock:
            self._closed = True
            self._pub.close()
        self._sub.close()

    def __enter__(self) -> Replica[C]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_arguments(name: str, crdt: Crdt, node_id: str, topic: str | None, sync_interval: float) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if not isinstance(node_id, str) or not node_id:
        raise ValueError("node_id must be a non-empty string")
    if not isinstance(crdt, Crdt):
        raise TypeError(f"crdt must be a value of arbiter.state.crdt, not {type(crdt).__name__}")
    if topic is not None and (not topic or "*" in topic):
        raise ValueError("topic must be a non-empty topic without '*'")
    low, high = SYNC_INTERVAL_RANGE
    if not low <= sync_interval <= high:
        raise ValueError(f"sync_interval must be between {low:g} and {high:g} seconds")


def _socket(ctx: zmq.Context, kind: int, endpoint: str, linger_ms: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.connect(endpoint)
    return sock
