"""The event bus: XSUB for publishers, XPUB for subscribers, with wildcard topics done by the broker.

libzmq filters subscriptions by byte prefix only, so ``plugin/*/events`` cannot be left to it.
The XPUB socket runs in manual mode: the broker sees every (un)subscription and decides what
each subscriber's socket filters on. A plain subscription is applied as it is (a prefix). A
wildcard subscription is applied literally, and each event whose topic matches the pattern is
sent once more with the pattern as frame 0, so only subscribers of that pattern receive it;
the envelope's ``topic`` field still names the concrete topic. Real topics never contain
``*``, so a prefix subscriber whose prefix also matches a pattern (``plugin/`` and
``plugin/*/events``) can recognise those copies and skip them, as ``arbiter events`` does.

Events are at-most-once: when nobody listens, the broker does not even build them.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, Callable, Mapping

import orjson
import zmq

from arbiter.wire.envelope import iso, new_id, utc_now
from arbiter.wire.topics import acceptable_pattern, is_pattern, topic_matches

POLLIN = int(zmq.POLLIN)
SUBSCRIBE = 1
UNSUBSCRIBE = 0


def event_envelope(topic: str, data: Mapping[str, Any], source: str = "arbiter") -> dict[str, Any]:
    return {
        "messageId": new_id(),
        "timestamp": iso(utc_now()),
        "source": source,
        "destination": "*",
        "topic": topic,
        "messageType": "event",
        "priority": 5,
        "headers": {},
        "payload": dict(data),
    }


def _user_of(frame: zmq.Frame) -> str | None:
    """The ZAP identity of a subscriber's message; None for the unsubscriptions libzmq makes
    itself when a subscriber goes, which name only subscriptions that were applied."""
    try:
        return frame.get("User-Id") or ""
    except zmq.ZMQError:
        return None


class EventHub:
    """Owns the two event sockets; used only from the broker's loop thread."""

    def __init__(
        self,
        ctx: zmq.Context,
        publishers: str,
        subscribers: str,
        linger_ms: int = 500,
        secure: Callable[[zmq.Socket], None] | None = None,
        may_publish: Callable[[str, str], bool] | None = None,
        may_subscribe: Callable[[str, str, bool], bool] | None = None,
    ):
        """``secure``: makes a socket a CURVE server before it binds; ``may_publish(identity,
        topic)``: whether a publisher's identity may publish on a topic; ``may_subscribe(identity,
        subscription, subscribing)``: whether a subscriber's may subscribe (security on)."""
        self.may_publish = may_publish
        self.may_subscribe = may_subscribe
        self.forbidden = 0  # publications dropped because their publisher may not publish there
        self._ctx, self._linger_ms, self._secure = ctx, linger_ms, secure
        self.xsub = ctx.socket(zmq.XSUB)
        self.xsub.setsockopt(zmq.LINGER, linger_ms)
        if secure is not None:
            secure(self.xsub)
        self.xpub = self._subscriber_socket()
        self.xsub.bind(publishers)
        self.xpub.bind(subscribers)
        self.xsub.send(b"\x01")  # take everything publishers send
        self.prefixes: dict[str, int] = {}
        self.patterns: dict[str, int] = {}
        self.published = 0
        self.forwarded = 0
        self.dropped = 0
        self.refused_patterns = 0  # wildcard subscriptions longer than topics.MAX_PATTERN
        # The broker waits on the sockets' ZMQ_FDs, which are edge-triggered: any operation on a
        # socket may consume the signal of input that arrived meanwhile, so after one the sockets
        # must be looked at again before the broker sleeps.
        self.touched = True

    def _subscriber_socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, self._linger_ms)
        if self._secure is not None:
            self._secure(sock)
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # see every unsubscription too
        sock.setsockopt(zmq.XPUB_MANUAL, 1)
        return sock

    def reopen_subscribers(self, patience_s: float = 2.0) -> None:
        """Close the subscribers' endpoint and bind it again: every subscriber reconnects and
        subscribes anew, so each subscription is judged by the rules now in force (a subscription
        once applied is not seen again otherwise) and a revoked key cannot connect. Events sent
        meanwhile are lost, as events may be. Loop thread only; the caller polls the new
        :meth:`fds`."""
        endpoint = self.xpub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.xpub.close(linger=0)
        self.xpub = self._subscriber_socket()
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.xpub.bind(endpoint)
                break
            except zmq.ZMQError as exc:  # the old listener may take a moment to let the port go
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.prefixes.clear()
        self.patterns.clear()
        self.wants.cache_clear()
        self.touched = True

    def fds(self) -> tuple[int, int]:
        """The descriptors that signal (edge-triggered) that a socket may have input."""
        return self.xsub.getsockopt(zmq.FD), self.xpub.getsockopt(zmq.FD)

    def drain(self, budget: int) -> bool:
        """Handle what both sockets hold, until a pass finds nothing and touched nothing, so the
        broker may sleep on the descriptors. True when ``budget`` passes ran out first."""
        for _ in range(budget):
            self.touched = False
            busy = False
            if self.xsub.getsockopt(zmq.EVENTS) & POLLIN:
                self.forward()
                busy = True
            if self.xpub.getsockopt(zmq.EVENTS) & POLLIN:
                self.on_subscription()
                busy = True
            if not busy and not self.touched:
                return False
        return True

    def close(self) -> None:
        self.xsub.close()
        self.xpub.close()

    # -- subscriptions ------------------------------------------------------------------

    def on_subscription(self) -> None:
        """Apply one (un)subscription message read from the XPUB socket."""
        frame = self.xpub.recv(copy=False)
        message = frame.bytes
        if not message or message[0] not in (SUBSCRIBE, UNSUBSCRIBE):
            return
        topic_bytes = message[1:]
        self.touched = True
        option = zmq.SUBSCRIBE if message[0] == SUBSCRIBE else zmq.UNSUBSCRIBE
        if self.may_subscribe is not None and (user := _user_of(frame)) is not None:
            wanted = topic_bytes.decode("utf-8", "replace")
            if not self.may_subscribe(user, wanted, option == zmq.SUBSCRIBE):
                return  # never applied: the subscriber's socket filters it out, it gets nothing
        self.xpub.setsockopt(option, topic_bytes)  # applies to the subscriber that sent it
        try:
            topic = topic_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return
        if is_pattern(topic) and not acceptable_pattern(topic):
            self.refused_patterns += 1  # applied literally by libzmq: no real topic contains '*'
            return
        table = self.patterns if is_pattern(topic) else self.prefixes
        count = table.get(topic, 0) + (1 if option == zmq.SUBSCRIBE else -1)
        if count > 0:
            table[topic] = count
        else:
            table.pop(topic, None)
        self.wants.cache_clear()

    @lru_cache(maxsize=4096)  # noqa: B019 - the hub lives as long as the broker; cleared on every change
    def wants(self, topic: str) -> bool:
        """Whether any subscriber would receive ``topic``; lets the broker skip building events."""
        return any(topic.startswith(p) for p in self.prefixes) or any(topic_matches(p, topic) for p in self.patterns)

    # -- publishing ---------------------------------------------------------------------

    def publish(self, topic: str, data: Mapping[str, Any]) -> None:
        """Publish one of the broker's own events, if anyone listens."""
        if not self.wants(topic):
            return
        self.published += 1
        self._send(topic, orjson.dumps(event_envelope(topic, data)))

    def forward(self) -> None:
        """Pass one publisher message from XSUB to subscribers, adding wildcard copies."""
        if self.may_publish is None:
            frames = self.xsub.recv_multipart()
        else:
            parts = self.xsub.recv_multipart(copy=False)
            user = parts[-1].get("User-Id") or ""
            frames = [part.bytes for part in parts]
            if not self.may_publish(user, frames[0].decode("utf-8", "replace")):
                self.forbidden += 1
                return
        if len(frames) < 2:
            self.dropped += 1
            return
        try:
            topic = frames[0].decode("utf-8")
        except UnicodeDecodeError:
            self.dropped += 1
            return
        self.forwarded += 1
        self._send(topic, frames[1], frames[2:])

    def _send(self, topic: str, body: bytes, extra: list[bytes] | None = None) -> None:
        tail = [body, *(extra or ())]
        self.touched = True
        try:
            self.xpub.send_multipart([topic.encode(), *tail], zmq.NOBLOCK)
            for pattern in self.patterns:
                if topic_matches(pattern, topic):
                    self.xpub.send_multipart([pattern.encode(), *tail], zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "forwarded": self.forwarded,
            "dropped": self.dropped,
            "refusedPatterns": self.refused_patterns,
            "forbiddenPublications": self.forbidden,
            "subscriptions": sorted(self.prefixes) + sorted(self.patterns),
        }
