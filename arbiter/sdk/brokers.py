"""Several brokers, one deployment: the list a client fails over along and a worker serves on all of.

ZeroMQ's own answer (the guide's "Freelance" pattern) needs no new server: a client knows every
broker and, when one stays silent, sends the same request (the same ``messageId``) to the next;
a worker connects to every broker and answers each on its own connection. This module holds what
both sides share: reading the list, the client's :class:`Rotation` with its counts, and the
worker's :class:`SeenCache`, the duplicate cache one worker keeps across all its connections, so a
request retried through another broker is answered from the cache rather than run again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

Endpoints = Union[str, Sequence[str]]


def endpoint_list(endpoints: Endpoints) -> list[str]:
    """One endpoint, a comma-separated string of several, or a sequence of them, as a list."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    found = [item.strip() for item in items if item and item.strip()]
    if not found:
        raise ValueError("no broker endpoint given")
    return found


@dataclass
class FailoverStats:
    """What a client's Lazy Pirate did: attempts sent again (``retries``), and how many of them
    went to another broker than the attempt before (``failovers``)."""

    retries: int = 0
    failovers: int = 0


@dataclass
class Rotation:
    """The brokers a client talks to, and the one it talks to now. It stays with a broker that
    answers and moves on to the next after a silent attempt (the Freelance client's first model:
    sequential failover)."""

    endpoints: list[str]
    at: int = 0
    stats: FailoverStats = field(default_factory=FailoverStats)

    @property
    def current(self) -> str:
        return self.endpoints[self.at]

    def retried(self) -> None:
        """An attempt is sent again: to the next broker when there are several."""
        self.stats.retries += 1
        if len(self.endpoints) > 1:
            self.at = (self.at + 1) % len(self.endpoints)
            self.stats.failovers += 1


@dataclass
class Seen:
    """One messageId: who waits for its reply (``(link, reply_to)`` pairs: the connection to answer
    on, and where on it) and, once computed, the reply itself."""

    waiters: list[tuple[Any, Any]] = field(default_factory=list)
    reply: list[bytes] | None = None


class SeenCache:
    """The bounded LRU of messageIds a worker ran, shared by its connections to every broker (each
    served by a thread of its own, hence the lock)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, Seen] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: str, waiter: tuple[Any, Any]) -> tuple[bool, list[bytes] | None]:
        """``(True, None)``: a new request, to run (``waiter`` waits for it); ``(False, reply)``:
        a duplicate, answered at once with ``reply`` when there is one, else ``waiter`` waits."""
        with self._lock:
            seen = self._entries.get(key)
            if seen is None:
                self._entries[key] = Seen(waiters=[waiter])
                self._trim()
                return True, None
            self._entries.move_to_end(key)
            if seen.reply is None:
                seen.waiters.append(waiter)
            return False, seen.reply

    def finish(self, key: str, reply: list[bytes], keep: bool) -> list[tuple[Any, Any]]:
        """The reply is known: returns who waits for it. Only kept for duplicates when ``keep``
        (a retry after an error must run again)."""
        with self._lock:
            seen = self._entries.setdefault(key, Seen())
            waiters, seen.waiters = seen.waiters, []
            if keep:
                seen.reply = reply
            else:
                self._entries.pop(key, None)
            return waiters

    def __len__(self) -> int:
        return len(self._entries)

    def _trim(self) -> None:
        """Bound the cache; entries still running are kept so their duplicates still wait."""
        while len(self._entries) > self.size:
            key, oldest = next(iter(self._entries.items()))
            if oldest.reply is None:
                break
            del self._entries[key]
