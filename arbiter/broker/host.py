"""What the broker's parts ask of it — the worker pool (``PoolHost``), the dispatcher
(``DispatchHost``), own services (``ServiceHost``), chain runs and the status report — answered by
handing each question to the part that owns the answer. A mixin of
:class:`~arbiter.broker.loop.Broker`, kept apart so the loop's module holds the loop.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any, Callable, Mapping

import orjson

from arbiter.broker import deciders, keepers, tracing
from arbiter.broker.decision_cache import Decided
from arbiter.broker.messages import RouteInput
from arbiter.broker.resilience import Transition
from arbiter.broker.routed import Attempt, Routed
from arbiter.broker.status import report
from arbiter.broker.workers import Pending, Service
from arbiter.project.model import Plugin
from arbiter.store.decisions import LogEntry

log = logging.getLogger("arbiter.broker")


class HostParts:
    """The host methods of :class:`~arbiter.broker.loop.Broker` (``self`` is the broker)."""

    telemetry: Any = None  # arbiter.telemetry.otel.Spans when the daemon exports spans

    @property
    def plugins(self) -> Mapping[str, Plugin]:
        return self.snapshot.plugins

    def has_workers(self, plugin: str) -> bool:
        return self.pool.has_workers(plugin)

    def send_try(self, attempt: Attempt, body: bytes) -> Pending:
        """Queue or deliver one try of a routed request; it holds no client slot of its own."""
        routed = attempt.routed
        pending = Pending(
            routed.client, routed.service_frame, [body], float("inf"), time.monotonic(), routed.message_id, attempt
        )
        self.pool.enqueue(attempt.plugin, pending)
        return pending

    def withdraw(self, attempt: Attempt) -> None:
        if attempt.pending is not None:
            self.pool.withdraw(attempt.plugin, attempt.pending)

    def start_routed(self, routed: Routed) -> None:
        self.dispatcher.start(routed)

    def ask_keeper(self, pending: Pending, operation: bytes, done: Callable[[list[bytes]], None]) -> bool:
        fail = partial(self.clients.fail, pending)
        return self.keepers is not None and keepers.ask(self.keepers, self.pool, pending, operation, done, fail)

    def ask_decider(
        self, pending: Pending, route: RouteInput, request_id: str, done: Callable[[Decided | None], None]
    ) -> bool:
        if self.deciders is None:
            return False
        circuits = self.dispatcher.circuits()
        body = deciders.request_body(self.snapshot.fingerprint, request_id, route, circuits, self.rates, self.unserved)
        return deciders.ask(self.deciders, self.pool, pending, body, done, partial(self.clients.fail, pending))

    def reply(self, pending: Pending, body: bytes) -> None:
        self.clients.reply(pending, body)

    def release(self, pending: Pending) -> None:
        self.admission.release(pending)

    def send_reply(self, pending: Pending, body: bytes) -> None:
        self.metrics.answered_body(pending.service_frame, pending.received, body)
        self.clients.send_client(pending.client, pending.service_frame, [body])

    def finish_routed(self, routed: Routed, reply: list[bytes], outcome: dict[str, Any], success: bool) -> None:
        self.admission.release(routed.origin)
        self.metrics.answered_routed(routed.service_frame, routed.received, outcome["status"])
        self.clients.send_client(routed.client, routed.service_frame, reply)
        self.log_decision(routed.decided.row.entry(routed.request_id, outcome, success, routed.route.trace_id))
        if self.telemetry is not None:
            attributes = {
                "arbiter.request_id": routed.request_id,
                "arbiter.plugin": outcome.get("plugin") or "",
                "arbiter.status": outcome.get("status") or "",
                "arbiter.tries": routed.attempts,
            }
            tracing.end(self.telemetry, routed.route.span, attributes, None if success else outcome.get("status"))

    def dead_letter_routed(self, routed: Routed, reason: str, detail: str) -> None:
        body = [orjson.dumps(routed.route.envelope)]
        self.clients.dead_letter(
            routed.service_frame, body, reason, detail, routed.client, routed.message_id, routed.route.trace_id
        )

    def log_decision(self, entry: LogEntry) -> None:
        """Record one request's decision row (a repeat of a cached decision points at the first)."""
        if self.decisions is not None:
            self.decisions.submit_entry(entry)

    def keep_task(self, row: Mapping[str, Any]) -> None:
        if self.decisions is not None:
            self.decisions.submit_task(row)

    def after_recorded(self, then: Callable[[], None]) -> None:
        """Call ``then`` once what was handed to the recorder so far is in the store (at once
        without a store)."""
        if self.decisions is None:
            then()
        else:
            self.decisions.when_written(then)

    def keep_letter(self, service: str, body: bytes, reason: str, detail: str, message_id: str) -> None:
        self.clients.dead_letter(service.encode(), [body], reason, detail, b"", message_id)

    def circuits(self) -> dict[str, str]:
        return self.dispatcher.circuits()

    def circuit_changed(self, change: Transition) -> None:
        """Publish it, and let the matcher see it from the next decision on."""
        log.warning(
            "circuit of %s: %s -> %s (%s)",
            change.plugin,
            change.old,
            change.new,
            change.reason,
            extra={"plugin": change.plugin},
        )
        self.counters[f"circuit-{change.new}"] += 1
        self._new_health()
        self.publish(f"plugin/{change.plugin}/circuit-breaker", change.event())
        if self.decisions is not None:
            plugin = self.snapshot.plugins.get(change.plugin)
            self.decisions.submit_circuit(change.plugin, plugin.version if plugin else "?", change.new, change.reason)

    def worker_event(self, event: str, service: Service, identity: bytes, why: str | None = None) -> None:
        """Publish it; a plugin's first worker or its last one gone changes what routing may choose."""
        count = len(service.workers)
        if count == (1 if event == "worker-up" else 0) and service.shown in self.snapshot.plugins:
            self._new_health()
            if count == 0:
                self.dispatcher.worker_gone(service.shown)
        data = {"event": event, "service": service.shown, "worker": identity.hex(), "workers": count}
        if why:
            data["reason"] = why
        self.publish("system/health", data)

    def publish(self, topic: str, data: Mapping[str, Any]) -> None:
        if self.events is not None:
            self.events.publish(topic, data)

    def wants(self, topic: str) -> bool:
        return self.events is not None and self.events.wants(topic)

    def caller(self, claimed: str) -> str:
        """Who sent the message being handled: with security on, the identity its key proved;
        else who the envelope says it is."""
        return self.user if self.guard is not None else claimed

    def status(self) -> dict[str, Any]:
        return report(self)
