"""Routed dispatch with graceful degradation: primary → retries → fallbacks in order → the last good
result of a cacheable command → dead letter, every step written down.

One :class:`~arbiter.broker.routed.Routed` follows a request from its decision to its answer. Each
try at a plugin is an :class:`~arbiter.broker.routed.Attempt` with its own deadline; the request
as a whole has the client's deadline. The broker runs this on its loop thread: it calls
:meth:`Dispatcher.start` after deciding, :meth:`Dispatcher.on_reply` when a worker answers an
attempt, and the timers set here fire through the broker's timer heap.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

import orjson

from arbiter.broker import messages as svc
from arbiter.broker import resilience as rz
from arbiter.broker import tracing
from arbiter.broker.calls import Calls
from arbiter.broker.metrics import Meter
from arbiter.broker.routed import Attempt, Routed
from arbiter.broker.workers import Pending
from arbiter.project.model import Plugin
from arbiter.routing.parameters import BindingTable, Call
from arbiter.wire import envelope as env

log = logging.getLogger("arbiter.broker")

RESULT_CACHE_SIZE = 2048
INTERNAL_ERROR_BODY = svc.error_body(None, "INTERNAL_ERROR", "the broker failed on this request; it is logged")


def _iso_at(epoch: float) -> str:
    return env.iso(datetime.fromtimestamp(epoch, timezone.utc))


class DispatchHost(Protocol):
    """What the dispatcher asks of the broker."""

    dropped: Counter[str]
    metrics: Meter
    telemetry: Any  # arbiter.telemetry.otel.Spans when spans are exported, else None

    @property
    def plugins(self) -> Mapping[str, Plugin]: ...

    @property
    def stopping(self) -> bool: ...

    def has_workers(self, plugin: str) -> bool: ...

    def send_try(self, attempt: Attempt, body: bytes) -> Pending:
        """Queue or deliver one try to a worker of ``attempt.plugin``."""
        ...

    def withdraw(self, attempt: Attempt) -> None:
        """Take a try still waiting in its queue back out."""
        ...

    def finish_routed(self, routed: Routed, reply: list[bytes], outcome: dict[str, Any], success: bool) -> None:
        """Answer the client, release its slot and record the outcome."""
        ...

    def dead_letter_routed(self, routed: Routed, reason: str, detail: str) -> None: ...

    def circuit_changed(self, change: rz.Transition) -> None: ...

    def call_at(self, when: float, action: Callable[[], None]) -> None: ...


class Dispatcher:
    """Runs routed requests for one broker; all state lives on the broker's loop thread."""

    def __init__(self, host: DispatchHost, attempt_timeout_s: float, rng: random.Random | None = None):
        self.host = host
        self.attempt_timeout_s = attempt_timeout_s
        self.inflight: set[Routed] = set()  # routed requests not yet answered
        self.rng = rng or random.Random()
        self.breakers: dict[str, rz.CircuitBreaker] = {}
        self.results: OrderedDict[tuple[str, str, bytes], tuple[Any, float]] = OrderedDict()
        self.calls = Calls()  # what each plugin is asked: command and parameters, per snapshot
        self.adopt(host.plugins)

    # -- breakers -----------------------------------------------------------------------

    def adopt(
        self,
        plugins: Mapping[str, Plugin],
        bindings: BindingTable | None = None,
        text_limit: int | None = None,
    ) -> None:
        """New snapshot: keep the state of breakers whose policy did not change. ``bindings`` and
        ``text_limit`` (``max_text_chars``) say how a routed request's parameters are read."""
        fresh: dict[str, rz.CircuitBreaker] = {}
        for name, plugin in plugins.items():
            policy = plugin.error_handling.circuit_breaker
            old = self.breakers.get(name)
            fresh[name] = old if old is not None and old.policy == policy else rz.CircuitBreaker(name, policy)
        self.breakers = fresh
        self.calls.adopt(bindings, text_limit)

    def tick(self, now: float) -> None:
        for breaker in self.breakers.values():
            self._announce(breaker.tick(now))

    def circuits(self) -> dict[str, str]:
        return {name: b.state for name, b in self.breakers.items() if b.state != rz.CLOSED}

    def _announce(self, change: rz.Transition | None) -> None:
        if change is not None:
            self.host.circuit_changed(change)

    # -- the flow -----------------------------------------------------------------------

    def start(self, routed: Routed) -> None:
        self.inflight.add(routed)
        self._contained(routed, self._next, routed)

    def _contained(self, routed: Routed, step: Callable[..., None], *args: Any) -> None:
        """Run one step of ``routed``. Should it fail, the failure is this request's alone: it is
        answered INTERNAL_ERROR and dead-lettered, its slot freed, and the broker serves on."""
        try:
            step(*args)
        except Exception:
            log.exception("internal error while dispatching request %s", routed.request_id)
            self.host.dropped["internal-error"] += 1
            if routed.done:
                return
            try:
                self.fail(routed, "INTERNAL_ERROR", "the broker failed on this request; it is logged", "internal-error")
            except Exception:  # even the error reply failed: end it with a reply that cannot
                log.exception("could not answer request %s", routed.request_id)
                self._finish(routed, [INTERNAL_ERROR_BODY], {"status": "internal-error", "plugin": None}, False)

    def _plugin(self, name: str) -> Plugin | None:
        return self.host.plugins.get(name)

    def _call(self, routed: Routed, plugin: Plugin) -> Call:
        """What the plugin at ``routed.stage`` is asked: the requested command where it has it,
        else its best match for the text; a chain's step sends the parameters it was given."""
        return self.calls.call_for(routed.route, plugin, routed.stage == 0, routed.owner is None)

    def _next(self, routed: Routed) -> None:
        """Try the plugin at ``routed.stage``, or move on until one takes the request."""
        if routed.done:
            return
        if self.host.stopping:
            self.fail(routed, "SHUTTING_DOWN", "the broker is stopping", "shutdown")
            return
        now = time.monotonic()
        while routed.stage < len(routed.plan):
            name = routed.plan[routed.stage]
            plugin = self._plugin(name)
            call = self._call(routed, plugin) if plugin else None
            if call is None or call.command is None:
                self._step(routed, name, None, "skipped", "the plugin is gone or has no command", now)
                self._advance(routed)
                continue
            if call.missing:  # only a fallback gets here: the broker asks for the primary's first
                self._step(routed, name, call.command, "needs-input", "needs " + ", ".join(call.missing), now)
                self._advance(routed)
                continue
            deadline = min(routed.deadline, now + (routed.attempt_timeout_s or self.attempt_timeout_s))
            attempt = Attempt(routed, name, call.command, call.bound.parameters, now, deadline, self)
            breaker = self.breakers.get(name)
            if breaker is not None:
                allowed, change = breaker.allow(now, attempt, deadline)
                self._announce(change)
                if not allowed:
                    self._step(routed, name, call.command, "circuit-open", "the circuit breaker is open", now)
                    self._advance(routed)
                    continue
            # A client's request moves on to a fallback at once; a chain's step waits in the queue
            # for a worker up to its timeout (workers rejoin a restarted broker within a heartbeat,
            # and a run resumed as the broker starts must not fail for that).
            if routed.owner is None and not self.host.has_workers(name):
                if breaker is not None:
                    breaker.forget(attempt)
                message = f"no worker serves '{name}'"
                self._failed(attempt, rz.UNAVAILABLE, "NO_WORKER", message, count=False, retry=False)
                return
            self._send(attempt)
            return
        self._exhausted(routed)

    def _advance(self, routed: Routed) -> None:
        routed.stage += 1
        routed.retries = 0

    def _send(self, attempt: Attempt) -> None:
        routed = attempt.routed
        routed.current = attempt
        if routed.stage and not routed.retries:  # the first try at a fallback
            self.host.metrics.fallback(attempt.plugin)
        attempt.span = tracing.begin_try(self.host.telemetry, attempt.plugin, attempt.command, routed)
        body = svc.dispatch_body(
            routed.route,
            attempt.plugin,
            attempt.command,
            attempt.parameters,
            routed.request_id,
            routed.decided.collaborators,
            routed.attempts,
            attempt.span.span_id,
        )
        routed.attempts += 1
        attempt.pending = self.host.send_try(attempt, body)

    def check_deadlines(self, now: float) -> None:
        """Time out the tries whose time is up (called by the broker every tick)."""
        for routed in [r for r in self.inflight if r.current and r.current.deadline <= now]:
            self._contained(routed, self._timed_out, routed.current)

    def worker_gone(self, plugin: str) -> None:
        """The last worker of ``plugin`` left: a client's try waiting for it moves on now, rather
        than at its timeout (a chain's step waits for a worker up to its timeout, as when sent)."""
        for routed in [r for r in self.inflight if r.current and r.current.plugin == plugin and r.owner is None]:
            self._contained(routed, self._left_unserved, routed.current)

    def _left_unserved(self, attempt: Attempt) -> None:
        if attempt.finished or attempt.routed.done:
            return
        self.host.withdraw(attempt)
        message = f"the last worker of '{attempt.plugin}' left"
        self._failed(attempt, rz.UNAVAILABLE, "NO_WORKER", message, count=False, retry=False)

    def _timed_out(self, attempt: Attempt) -> None:
        if attempt.finished or attempt.routed.done:
            return
        self.host.withdraw(attempt)
        waited = time.monotonic() - attempt.started
        if not self.host.has_workers(attempt.plugin):
            message = f"no worker of '{attempt.plugin}' came within {waited:.1f}s"
            self._failed(attempt, rz.UNAVAILABLE, "NO_WORKER", message)
            return
        self._failed(attempt, rz.TIMEOUT, "TIMEOUT", f"no answer from '{attempt.plugin}' within {waited:.1f}s")

    def on_reply(self, attempt: Attempt, body: list[bytes]) -> None:
        """A worker answered ``attempt``. A late success still wins if the request is open."""
        self._contained(attempt.routed, self._on_reply, attempt, body)

    def _on_reply(self, attempt: Attempt, body: list[bytes]) -> None:
        routed = attempt.routed
        was_finished = attempt.finished
        attempt.finished = True
        if routed.done:
            self.host.dropped["late-reply"] += 1
            return
        now = time.monotonic()
        duration_ms = (now - attempt.started) * 1000
        self.host.metrics.try_answered(attempt.plugin, now - attempt.started)
        answer = svc.WorkerAnswer.read(body)
        code, message = answer.error_code, answer.error_message
        breaker = self.breakers.get(attempt.plugin)
        if code is None:
            if breaker is not None and not was_finished:
                self._announce(breaker.success(now, attempt, duration_ms))
            self._step(routed, attempt.plugin, attempt.command, "success", None, attempt.started)
            tracing.end_try(self.host.telemetry, attempt.span, routed.steps[-1])
            self._remember(attempt, answer)
            self._finish_with_reply(routed, attempt, answer)
            return
        if was_finished:
            self.host.dropped["late-reply"] += 1
            return
        if code in rz.CLIENT_ERRORS:
            if breaker is not None:
                breaker.forget(attempt)
            self._step(routed, attempt.plugin, attempt.command, "rejected", f"{code}: {message}", attempt.started)
            tracing.end_try(self.host.telemetry, attempt.span, routed.steps[-1])
            self._finish_with_reply(routed, attempt, answer)
            return
        self._failed(attempt, rz.ERROR, code, message)

    def _failed(
        self, attempt: Attempt, kind: str, code: str, message: str, count: bool = True, retry: bool = True
    ) -> None:
        """Record the failure, then retry the same plugin after a backoff (unless ``retry`` is
        False: nothing could serve a retry now) or move to the next."""
        attempt.finished = True
        routed = attempt.routed
        now = time.monotonic()
        breaker = self.breakers.get(attempt.plugin)
        if count and breaker is not None:
            self._announce(breaker.failure(now, attempt, f"{code}: {message}"))
        self._step(routed, attempt.plugin, attempt.command, kind, f"{code}: {message}", attempt.started)
        tracing.try_failed(self.host.telemetry, attempt, routed.steps[-1])
        plugin = self._plugin(attempt.plugin)
        policy = plugin.error_handling.retry if plugin else None
        if retry and self._retries_left(routed, policy, kind, code):
            delay = rz.backoff_ms(policy, routed.retries + 1, self.rng) / 1000 if policy else 0.0
            if now + delay < routed.deadline:
                routed.retries += 1
                self.host.metrics.retry(attempt.plugin)
                routed.steps[-1]["retryInMs"] = round(delay * 1000, 1)
                self.host.call_at(now + delay, lambda: self._contained(routed, self._next, routed))
                return
        self._advance(routed)
        self._next(routed)

    def _retries_left(self, routed: Routed, policy: rz.RetryPolicy | None, kind: str, code: str) -> bool:
        """A chain step's ``retry N`` tries the plugin again on any failure that is not the
        client's; otherwise the plugin's retry policy decides."""
        if routed.max_retries is not None:
            return routed.retries < routed.max_retries
        return policy is not None and rz.is_retryable(policy, kind, code) and routed.retries < policy.max_retries

    def _step(
        self, routed: Routed, plugin: str, command: str | None, outcome: str, detail: str | None, started: float
    ) -> None:
        step: dict[str, Any] = {
            "plugin": plugin,
            "command": command,
            "outcome": outcome,
            "attempt": routed.attempts,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
        if detail:
            step["detail"] = detail
        routed.steps.append(step)
        self.host.metrics.step(plugin, outcome)

    # -- endings ------------------------------------------------------------------------

    def _finish_with_reply(self, routed: Routed, attempt: Attempt, answer: svc.WorkerAnswer) -> None:
        degraded = attempt.plugin != routed.plan[0]
        reply = svc.routed_reply(
            routed.route,
            attempt.plugin,
            attempt.command,
            routed.decision,
            answer,
            steps=routed.steps,
            degraded=degraded,
        )
        status = "success" if answer.error_code is None else "error"
        self._finish(
            routed,
            [reply],
            {"status": status, "plugin": attempt.plugin, "command": attempt.command, "degraded": degraded},
            status == "success",
        )

    def _exhausted(self, routed: Routed) -> None:
        """Nothing answered: serve the last good result of a cacheable command, or dead-letter."""
        now = time.time()
        for name in routed.plan:
            plugin = self._plugin(name)
            if plugin is None:
                continue
            command = self._call(routed, plugin).command
            hit = self.results.get(self._cache_key(routed, name, command)) if command else None
            if hit is None or now - hit[1] > plugin.error_handling.fallback.cache_ttl_ms / 1000:
                continue
            self._step(routed, name, command, "cached", f"last good result from {_iso_at(hit[1])}", time.monotonic())
            result = {
                "plugin": name,
                "command": command,
                "decision": routed.decision,
                "result": hit[0],
                "steps": routed.steps,
                "degraded": True,
                "fromCache": True,
                "cachedAt": _iso_at(hit[1]),
            }
            body = svc.success_body(routed.route.envelope, result)
            self._finish(
                routed, [body], {"status": "cached", "plugin": name, "command": command, "degraded": True}, True
            )
            return
        last = {step["plugin"]: step.get("detail") or step["outcome"] for step in routed.steps}  # each one's last word
        detail = "; ".join(f"{plugin}: {said}" for plugin, said in last.items()) or "no plugin to try"
        body = svc.error_body(
            routed.route.envelope,
            "EXHAUSTED",
            f"every plugin failed ({detail})",
            decision=routed.decision,
            steps=routed.steps,
        )
        if routed.owner is None:  # a chain's step: its run decides what its failure means
            self.host.dead_letter_routed(routed, "exhausted", f"EXHAUSTED: {detail}")
        self._finish(routed, [body], {"status": "exhausted", "plugin": None}, False)

    def fail(self, routed: Routed, code: str, message: str, reason: str) -> None:
        """The broker gives up on the request (shutdown, the client's deadline)."""
        if routed.done:
            return
        if routed.current is not None:
            self.host.withdraw(routed.current)
            if not routed.current.finished:
                tracing.end_try(self.host.telemetry, routed.current.span, {"outcome": reason}, code)
        body = svc.error_body(routed.route.envelope, code, message, decision=routed.decision, steps=routed.steps)
        if routed.owner is None:
            self.host.dead_letter_routed(routed, reason, f"{code}: {message}")
        self._finish(routed, [body], {"status": reason, "plugin": None, "error": code}, False)

    def _finish(self, routed: Routed, reply: list[bytes], outcome: dict[str, Any], success: bool) -> None:
        routed.done = True
        self.inflight.discard(routed)
        routed.current = None  # the last try points back at the request: no cycle left for the collector
        outcome.update(
            steps=routed.steps,
            attempts=routed.attempts,
            cachedDecision=routed.cached,
            durationMs=round((time.monotonic() - routed.received) * 1000, 2),
        )
        if routed.owner is not None:
            routed.owner(routed, reply, outcome, success)
        else:
            self.host.finish_routed(routed, reply, outcome, success)

    # -- the last good results ----------------------------------------------------------

    def _cache_key(self, routed: Routed, plugin: str, command: str) -> tuple[str, str, bytes]:
        params = orjson.dumps(routed.route.parameters, option=orjson.OPT_SORT_KEYS)
        return (plugin, command, params + b"\0" + routed.route.text.encode())

    def _remember(self, attempt: Attempt, answer: svc.WorkerAnswer) -> None:
        plugin = self._plugin(attempt.plugin)
        if plugin is None or attempt.command not in plugin.error_handling.fallback.cacheable:
            return
        key = self._cache_key(attempt.routed, attempt.plugin, attempt.command)
        self.results[key] = (answer.result, time.time())
        self.results.move_to_end(key)
        if len(self.results) > RESULT_CACHE_SIZE:
            self.results.popitem(last=False)
