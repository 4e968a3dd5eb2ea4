"""The dashboard's link to the broker: a thread that polls ``arbiter.status`` about once a
second, and a thread on the broker's event bus (a SUB socket), both feeding the :class:`Hub`.

Both threads wait on one stop event and poll their sockets in short slices, so :meth:`stop`
ends them within a fraction of a second."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

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
    frontend: str
    events: str


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
    """Status poller and event subscriber threads for one broker."""

    def __init__(self, hub: Hub, endpoints: Endpoints, interval: float = 1.0, curve: CurveKeys | None = None) -> None:
        self.hub = hub
        self.endpoints = endpoints
        self.interval = interval
        self.curve = curve if curve is not None else CurveKeys.from_env()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: deque[str] = deque(maxlen=SEEN_IDS)

    def start(self) -> None:
        for target, name in ((self._poll, "dashboard-status"), (self._listen, "dashboard-events")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def client(self, timeout: float = 5.0, retries: int = 0) -> Client:
        """A client of the broker for one caller (clients are not shared between threads)."""
        return Client(
            self.endpoints.frontend, timeout=timeout, retries=retries, source="arbiter-dashboard", curve=self.curve
        )

    # -- status --------------------------------------------------------------------------------

    def _poll(self) -> None:
        context = zmq.Context.instance()
        with Client(
            self.endpoints.frontend,
            timeout=max(self.interval * 2, 1.0),
            retries=0,
            source="arbiter-dashboard",
            context=context,
            curve=self.curve,
        ) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self._poll_once(client)
                self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def _poll_once(self, client: Client) -> None:
        try:
            reply = client.request("arbiter.status", env.new_request("arbiter.status", "status", source=client.source))
        except ClientError as exc:
            self.hub.set_unreachable(str(exc))
            return
        if not reply.ok or not isinstance(reply.result, dict):
            self.hub.set_unreachable(f"arbiter.status answered {reply.error or reply.text()[:200]}")
            return
        point = self.hub.series.add(reply.result)
        self.hub.set_status(reply.result, point)

    # -- events --------------------------------------------------------------------------------

    def _listen(self) -> None:
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        for topic in TOPICS:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        connect(sock, self.endpoints.events, self.curve)
        try:
            while not self._stop.is_set():
                if sock.poll(POLL_SLICE_MS):
                    self._receive(sock.recv_multipart())
        finally:
            sock.close(linger=0)

    def _receive(self, frames: list[bytes]) -> None:
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
        if message_id and message_id in self._seen:
            return
        self._seen.append(message_id)
        topic = str(envelope.get("topic") or head)
        kind = event_kind(topic)
        if kind is not None:
            self.hub.publish(kind, event_data(topic, envelope))
