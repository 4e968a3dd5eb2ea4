"""The limits a client request must pass before the broker takes it on.

Every accepted request holds a slot until it is answered: one of its client's
``limits.client_inflight`` and one of the broker's ``limits.total_pending``. So a flood from one
client, or from all of them, is refused at the door with an error reply instead of growing the
broker's memory. Whoever answers a request releases its slot; a slot is released once however many paths
try.
"""

from __future__ import annotations

from arbiter.broker.settings import Settings
from arbiter.broker.workers import Pending

Refusal = tuple[str, str]  # (error code, message for people)


class Admission:
    """Slot counts per client and in all; the loop thread's alone."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client_inflight: dict[bytes, int] = {}  # a plain dict: Counter's __missing__ is Python
        self.pending_total = 0

    def too_large(self, body: list[bytes]) -> Refusal | None:
        size = sum(map(len, body))
        limit = self.settings.max_message_bytes
        if size > limit:
            return "TOO_LARGE", f"the body is {size} bytes, over the limit of {limit}"
        return None

    def admit(self, client: bytes) -> Refusal | None:
        """Take a slot for ``client``'s new request, or say why not."""
        held = self.client_inflight.get(client, 0)
        if held >= self.settings.client_inflight:
            return "INFLIGHT_LIMIT", f"this client already has {self.settings.client_inflight} requests in flight"
        if self.pending_total >= self.settings.total_pending:
            return "QUEUE_FULL", "the broker holds as many requests as it may"
        self.client_inflight[client] = held + 1
        self.pending_total += 1
        return None

    def release(self, pending: Pending) -> None:
        """Free the slot ``pending`` held since it was admitted; it is answered now. A second
        release of the same request does nothing, so every path that ends a request may release it."""
        if pending.answered:
            return
        pending.answered = True
        self.pending_total -= 1
        client = pending.client
        left = self.client_inflight.get(client, 0) - 1
        if left > 0:
            self.client_inflight[client] = left
        else:
            self.client_inflight.pop(client, None)
