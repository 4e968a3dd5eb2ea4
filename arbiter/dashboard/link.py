"""The dashboard's link to the brokers: per broker a thread that polls ``arbiter.status`` about
once a second, and one thread on every broker's event bus (a SUB socket each), all feeding the
:class:`Hub`.

With several brokers (docs/DEPLOYMENT.md) the page shows each broker's row; its charts, services
and circuits are those of the first broker of the list that answers, and the dashboard's own
requests (explain, replay) go to that one first, failing over along the list as the SDK client
does. Events carry the name of the broker they came from; one delivered twice shows once.

The threads wait on one stop event and poll their sockets in short slices, so :meth:`stop` ends
them within a fraction of a second."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import orjson
import zmq

from arbiter.dashboard.hub import Hub
from arbiter.sdk.client import Client, ClientError
from arbiter.sdk.curve import CurveKeys, connect
from arbiter.wire import envelope as env

# Prefixes and patterns (PROTOCOL.md §7) the dashboard listens to.
TOPICS = ("routing/decision", "orchestration/", "plugin/*/circuit-breaker", "system/")
POLL_SLICE_MS = 200
SEEN_IDS = 512  # recent messageIds: an event delivered twice (a prefix and a pattern) shows once


@dataclass(frozen=True)
class Endpoints:
    """One broker: its frontend, its event endpoint for subscribers, and the name the page shows
    (its frontend when it has none)."""

    frontend: str
    events: str
    name: str = ""

    @property
    def shown(self) -> str:
        return self.name or self.frontend


def event_kind(topic: str) -> str | None:
    """Which part of the page an event updates, from its concrete topic."""
    if topic == "routing/decision":
        return "decision"
    if topic.startswith("orchestration/chain/") or topic == "orchestration/task-complete":
        return "chain"
    if topic.startswith("plugin/") and topic.endswith("/circuit-breaker"):
        return "circuit"
    if topic == "system/dead-letter":
        return "dead-letter"
    if topic == "system/reload":
        return "reload"
    if topic.startswith("system/"):
        return "system"
    return None


def event_data(topic: str, envelope: dict[str, Any]) -> dict[str, Any]:
    """The payload with its topic and time; a chain event also names its event (last segment)."""
    payload = envelope.get("payload") if isinstance(envelope.get("payload"), dict) else {}
    data = {**payload, "topic": topic, "at": envelope.get("timestamp")}
    if topic.startswith("orchestration/chain/"):
        data["event"] = topic.rsplit("/", 1)[-1]
    return data


class BrokerLink:
    """Status poller threads (one per broker) and the event subscriber thread."""

    def __init__(
        self,
        hub: Hub,
        brokers: Endpoints | Sequence[Endpoints],
        interval: float = 1.0,
        curve: CurveKeys | None = None,
    ) -> None:
        self.hub = hub
        self.brokers = [brokers] if isinstance(brokers, Endpoints) else list(brokers)
        self.interval = interval
        self.curve = curve if curve is not None else CurveKeys.from_env()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: deque[str] = deque(maxlen=SEEN_IDS)
        self._seen_lock = threading.Lock()
        hub.set_brokers([(b.shown, b.frontend) for b in self.brokers])

    @property
    def endpoints(self) -> Endpoints:
        """The first broker of the list (the only one, with one broker)."""
        return self.brokers[0]

    def start(self) -> None:
        jobs = [(lambda b=b: self._poll(b), f"dashboard-status-{n}") for n, b in enumerate(self.brokers)]
        for target, name in [*jobs, (self._listen, "dashboard-events")]:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def client(self, timeout: float = 5.0, retries: int = 0) -> Client:
        """A client for one caller (clients are not shared between threads): the brokers from the
        first that answered the last poll on, so a silent one is tried again on the next."""
        frontends = [b.frontend for b in self.brokers]
        first = self.hub.primary_frontend()
        at = frontends.index(first) if first in frontends else 0
        ordered = frontends[at:] + frontends[:at]
        return Client(
            ordered,
            timeout=timeout,
            retries=max(retries, len(ordered) - 1),
            source="arbiter-dashboard",
            curve=self.curve,
        )

    # -- status --------------------------------------------------------------------------------

    def _poll(self, broker: Endpoints) -> None:
        context = zmq.Context.instance()
        with Client(
            broker.frontend,
            timeout=max(self.interval * 2, 1.0),
            retries=0,
            source="arbiter-dashboard",
            context=context,
            curve=self.curve,
        ) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self._poll_once(client, broker)
                self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def _poll_once(self, client: Client, broker: Endpoints) -> None:
        try:
            reply = client.request("arbiter.status", env.new_request("arbiter.status", "status", source=client.source))
        except ClientError as exc:
            self.hub.set_broker_down(broker.shown, str(exc))
            return
        if not reply.ok or not isinstance(reply.result, dict):
            self.hub.set_broker_down(broker.shown, f"arbiter.status answered {reply.error or reply.text()[:200]}")
            return
        self.hub.set_broker_status(broker.shown, reply.result)

    # -- events --------------------------------------------------------------------------------

    def _listen(self) -> None:
        poller, names = zmq.Poller(), {}
        for broker in self.brokers:  # a socket per broker, so that each event says whose it is
            sock = zmq.Context.instance().socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 10_000)
            for topic in TOPICS:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            connect(sock, broker.events, self.curve)
            poller.register(sock, zmq.POLLIN)
            names[sock] = broker.shown
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(POLL_SLICE_MS):
                    self._receive(sock.recv_multipart(), names[sock])
        finally:
            for sock in names:
                sock.close(linger=0)

    def _receive(self, frames: list[bytes], broker: str = "") -> None:
        head = frames[0].decode("utf-8", "replace")
        if "*" in head and head not in TOPICS:
            return  # another subscriber's pattern copy that one of our prefixes also matches
        try:
            envelope = orjson.loads(frames[1]) if len(frames) > 1 else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(envelope, dict):
            return
        message_id = str(envelope.get("messageId") or "")
        with self._seen_lock:
            if message_id and message_id in self._seen:
                return
            self._seen.append(message_id)
        topic = str(envelope.get("topic") or head)
        kind = event_kind(topic)
        if kind is not None:
            data = event_data(topic, envelope)
            if len(self.brokers) > 1:
                data["broker"] = broker
            self.hub.publish(kind, data)
