"""What the dashboard knows of the broker right now, and who is watching: the newest status and
its time series, rings of recent events, and the pages' live streams (server-sent events). With
several brokers, a row for each (does it answer, its fingerprint, workers, pending); the status and
the series are those of the first broker of the list that answers.

The broker link's threads write here; the ASGI app's event loop reads. Every stream has a bounded
queue: a page that cannot keep up is told to reload its data (``resync``) instead of holding an
ever-growing backlog in the server."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from arbiter.dashboard.series import Series

STREAM_QUEUE = 500  # messages a page may fall behind before it is asked to resync
RECENT_EVENTS = 300


@dataclass(eq=False)  # compared and hashed by identity: streams live in a set
class Stream:
    """One page's live stream: messages queued on the app's event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(STREAM_QUEUE))
    overflowed: bool = False

    def offer(self, message: dict[str, Any]) -> None:
        """Called from any thread; the message is queued on the stream's loop."""
        try:
            self.loop.call_soon_threadsafe(self._put, message)
        except RuntimeError:
            pass  # the loop is closed: the page is gone

    def _put(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False


class Hub:
    """Shared state between the broker link's threads and the web app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: set[Stream] = set()
        self._ids = itertools.count(1)
        self.status: dict[str, Any] | None = None
        self.connected = False
        self.error: str | None = None
        self.series = Series()
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.brokers: dict[str, dict[str, Any]] = {}  # by name, in the list's order
        self._primary: str | None = None  # the broker whose status the page shows

    def open_stream(self, loop: asyncio.AbstractEventLoop) -> Stream:
        stream = Stream(loop)
        with self._lock:
            self._streams.add(stream)
        return stream

    def close_stream(self, stream: Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    @property
    def streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send one message to every page; events are also kept for pages that open later."""
        message = {"id": next(self._ids), "kind": kind, "data": data}
        with self._lock:
            if kind not in ("status", "link", "brokers"):
                self.events.append(message)
            streams = list(self._streams)
        for stream in streams:
            stream.offer(message)

    def set_status(self, status: dict[str, Any], point: dict[str, Any] | None) -> None:
        with self._lock:
            self.status, self.connected, self.error = status, True, None
        self.publish("status", {"status": status, "point": point})

    def set_unreachable(self, error: str) -> None:
        with self._lock:
            was = self.connected
            self.connected, self.error = False, error
            self.series.reset()
        if was or self.status is None:
            self.publish("link", {"connected": False, "error": error})

    # -- several brokers ------------------------------------------------------------------------

    def set_brokers(self, brokers: list[tuple[str, str]]) -> None:
        """The brokers polled, ``(name, frontend)`` in the list's order; none answered yet."""
        with self._lock:
            self.brokers = {name: {"name": name, "frontend": frontend, "up": None} for name, frontend in brokers}

    def primary_frontend(self) -> str | None:
        with self._lock:
            return self.brokers[self._primary]["frontend"] if self._primary in self.brokers else None

    def set_broker_status(self, name: str, status: dict[str, Any]) -> None:
        """A broker answered ``arbiter.status``: its row, and the page's status when it is the
        first of the list that answers."""
        snapshot = status.get("snapshot") or {}
        row = {"up": True, "error": None, "pid": status.get("pid"), "uptimeSeconds": status.get("uptimeSeconds"),
               "fingerprint": snapshot.get("fingerprint"), "workers": status.get("workers"),
               "pending": status.get("pending")}  # fmt: skip
        if self._update_broker(name, row):
            self.set_status(status, self.series.add(status))

    def set_broker_down(self, name: str, error: str) -> None:
        if self._update_broker(name, {"up": False, "error": error}):
            self.set_unreachable(error)  # no broker answers (or the one whose status the page shows went)

    def _update_broker(self, name: str, changes: dict[str, Any]) -> bool:
        """Update a broker's row and tell the pages; True when the page's status follows this broker
        (the first of the list that answers; with none answering, any report of a failure)."""
        with self._lock:
            row = self.brokers.setdefault(name, {"name": name, "frontend": "", "up": None})
            row.update(changes)
            rows = [dict(r) for r in self.brokers.values()]
            primary = next((r["name"] for r in rows if r["up"]), None)
            switched, self._primary = primary != self._primary, primary
            if switched:
                self.series.reset()  # another broker's counters: the differences start over
        self.publish("brokers", {"brokers": rows})
        return primary == name or primary is None

    def snapshot(self) -> dict[str, Any]:
        """Everything a page needs when it opens: status, series, recent events."""
        with self._lock:
            return {
                "connected": self.connected,
                "error": self.error,
                "status": self.status,
                "series": self.series.to_json(),
                "events": list(self.events),
                "brokers": [dict(row) for row in self.brokers.values()],
            }
