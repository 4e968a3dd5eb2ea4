"""``arbiter.status``: the broker's state as one JSON object (docs/PROTOCOL.md §4.1).

Request: an envelope (its payload is not read) or an empty body.
Reply: a success envelope whose ``result`` is the status: services with workers, queues and
in-flight counts, circuits, counters and drop reasons, writers, the served snapshot and the last
reload, limits.
Command line: ``arbiter status [--json]``.
"""

from __future__ import annotations

from typing import Any

from arbiter.broker import messages
from arbiter.broker.services.base import ServiceHost
from arbiter.broker.workers import Pending


class StatusService:
    name = "arbiter.status"

    def read(self, body: list[bytes]) -> dict[str, Any]:
        return messages.read_envelope(body) if body else {}

    def execute(self, host: ServiceHost, pending: Pending, envelope: dict[str, Any]) -> None:
        host.release(pending)  # the report is of everything else in flight
        host.send_reply(pending, messages.success_body(envelope, host.status()))
