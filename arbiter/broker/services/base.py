"""What an own service may ask of the broker, and the shape every own service has."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Protocol

from arbiter.broker.chains import ChainDesk
from arbiter.broker.decision_cache import Decided, DecisionCache
from arbiter.broker.dispatch import Dispatcher
from arbiter.broker.messages import RouteInput
from arbiter.broker.metrics import Meter
from arbiter.broker.routed import Routed
from arbiter.broker.settings import Settings
from arbiter.broker.workers import Pending
from arbiter.project.model import Plugin
from arbiter.project.snapshot import Snapshot
from arbiter.routing.match import Health
from arbiter.routing.pipeline import Router
from arbiter.store.decisions import LogEntry


class ServiceHost(Protocol):
    settings: Settings
    snapshot: Snapshot
    chains: ChainDesk
    dispatcher: Dispatcher

    @property
    def plugins(self) -> Mapping[str, Plugin]: ...

    router: Router
    health: Mapping[str, Health]
    decision_cache: DecisionCache
    counters: Counter[str]
    metrics: Meter
    telemetry: Any  # arbiter.telemetry.otel.Spans when spans are exported, else None

    def reply(self, pending: Pending, body: bytes) -> None:
        """Answer the client and release its slot."""
        ...

    def release(self, pending: Pending) -> None:
        """Release the client's slot (then :meth:`send_reply`)."""
        ...

    def send_reply(self, pending: Pending, body: bytes) -> None: ...

    def publish(self, topic: str, data: Mapping[str, Any]) -> None: ...

    def wants(self, topic: str) -> bool:
        """Whether anyone subscribed to ``topic``: events nobody reads are not built."""
        ...

    def start_routed(self, routed: Routed) -> None: ...

    def ask_decider(
        self, pending: Pending, route: RouteInput, request_id: str, done: Callable[[Decided | None], None]
    ) -> bool:
        """Have a decider process decide ``route``; ``done`` gets the decision, or None when the
        decider's snapshot was stale. False when no decider runs (decide it yourself)."""
        ...

    def ask_keeper(self, pending: Pending, operation: bytes, done: Callable[[list[bytes]], None]) -> bool:
        """Have a state keeper run ``operation`` for ``pending``; ``done`` gets its answer. False
        when no keeper runs."""
        ...

    def caller(self, claimed: str) -> str:
        """The identity to act for: the authenticated one with security on, else ``claimed``."""
        ...

    def log_decision(self, entry: LogEntry) -> None: ...

    def after_recorded(self, then: Callable[[], None]) -> None:
        """Call ``then`` once what the broker handed to the store so far is written."""
        ...

    def circuits(self) -> dict[str, str]: ...

    def status(self) -> dict[str, Any]: ...


class OwnService(Protocol):
    name: str

    def read(self, body: list[bytes]) -> Any:
        """The typed request, or ``BadRequest`` naming what is wrong."""
        ...

    def execute(self, host: ServiceHost, pending: Pending, request: Any) -> None: ...
