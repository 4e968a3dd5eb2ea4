"""A routed request in flight and its tries: what the dispatcher, the chains and the own
services hold of a request between its decision and its answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import orjson

from arbiter.broker import messages as svc
from arbiter.broker import tracing
from arbiter.broker.decision_cache import Decided
from arbiter.broker.workers import Pending


class AttemptOwner(Protocol):
    """Who a try reports to (the dispatcher)."""

    def on_reply(self, attempt: Attempt, body: list[bytes]) -> None: ...

    def fail(self, routed: Routed, code: str, message: str, reason: str) -> None: ...


@dataclass(eq=False, slots=True)
class Routed:
    """A routed request from decision to answer; it holds the client's in-flight slot."""

    client: bytes
    service_frame: bytes
    route: svc.RouteInput
    decided: Decided
    request_id: str
    cached: bool
    deadline: float  # monotonic: the client's patience
    received: float
    origin: Pending | None  # the client's request as admitted, which holds its slot (None: a chain's step)
    stage: int = 0
    retries: int = 0  # retries on the current plugin
    attempts: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    current: Attempt | None = None
    done: bool = False
    # A chain's step: who hears the end instead of a client, and the step's own timeout and tries.
    owner: Callable[[Routed, list[bytes], dict[str, Any], bool], None] | None = None
    attempt_timeout_s: float | None = None
    max_retries: int | None = None

    @property
    def message_id(self) -> str | None:
        return self.route.envelope.get("messageId")

    @property
    def plan(self) -> tuple[str, ...]:
        """Primary, then fallbacks in order."""
        return self.decided.plan

    @property
    def decision(self) -> orjson.Fragment:
        return self.decided.json_for(self.request_id)


@dataclass(eq=False, slots=True)
class Attempt:
    routed: Routed
    plugin: str
    command: str
    parameters: dict[str, Any]
    started: float
    deadline: float
    dispatcher: AttemptOwner
    pending: Pending | None = None
    finished: bool = False
    span: tracing.Span | None = None  # the try's span: the worker's traceparent names it

    @property
    def settled(self) -> bool:
        """Answered or given up, or its request ended: the worker holding it no longer matters."""
        return self.finished or self.routed.done

    def answered(self, body: list[bytes]) -> None:
        self.dispatcher.on_reply(self, body)

    def lost(self, code: str, message: str, reason: str) -> None:
        """The broker gave this try up (its workers kept dying): the request ends, without its
        fallbacks, which such a request would only go on to harm."""
        self.finished = True
        self.dispatcher.fail(self.routed, code, message, reason)
