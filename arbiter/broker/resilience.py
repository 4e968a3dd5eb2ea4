"""Per-plugin resilience from the manifest: circuit breakers, retry backoff, and how a failure is classed.

Pure logic with an injected clock, so every transition is tested without sleeping. The broker
owns one :class:`CircuitBreaker` per plugin and asks it before each dispatch; it reports every
outcome back. Transitions are returned to the caller, which publishes them.

Unlike the seed's sketch, a half-open breaker cannot get stuck: each trial it lets through has a
deadline, and a trial that never reports back counts as a failure when that deadline passes.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from arbiter.project.model import CircuitBreakerPolicy, RetryPolicy

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"

# Failure kinds the broker reports. A manifest's retryableErrors names kinds or error codes.
TIMEOUT = "timeout"  # no answer within the attempt's time
UNAVAILABLE = "unavailable"  # no worker, the worker was lost, or the circuit is open
ERROR = "error"  # the worker answered with an error

# Errors that say the request itself is wrong: retrying or asking another plugin cannot help,
# and they say nothing about the plugin's health.
CLIENT_ERRORS = frozenset({"BAD_REQUEST", "BAD_PARAMETERS", "UNKNOWN_COMMAND", "EXPIRED"})


@dataclass(frozen=True)
class Transition:
    plugin: str
    old: str
    new: str
    reason: str
    failures: int

    def event(self) -> dict[str, object]:
        """As ``plugin/<name>/circuit-breaker`` announces it."""
        return {"plugin": self.plugin, "state": self.new, "previous": self.old, "reason": self.reason,
                "failures": self.failures}  # fmt: skip


@dataclass
class CircuitBreaker:
    """closed → open after ``threshold`` failures within ``window``; open → half-open after
    ``timeout``; half-open lets ``half_open_retries`` trials through: all succeed → closed,
    any fails (or never answers) → open again."""

    plugin: str
    policy: CircuitBreakerPolicy
    state: str = CLOSED
    opened_at: float = 0.0
    failures: deque[float] = field(default_factory=deque)
    trials: dict[object, float] = field(default_factory=dict)  # trial key -> deadline
    trial_successes: int = 0
    transitions: int = 0

    @property
    def timeout_s(self) -> float:
        return self.policy.timeout_ms / 1000

    def _recent_failures(self, now: float) -> int:
        horizon = now - self.policy.window_ms / 1000
        while self.failures and self.failures[0] < horizon:
            self.failures.popleft()
        return len(self.failures)

    def _move(self, new: str, now: float, reason: str) -> Transition:
        old, self.state = self.state, new
        self.transitions += 1
        if new == OPEN:
            self.opened_at = now
        if new != HALF_OPEN:
            self.trials.clear()
        self.trial_successes = 0
        if new == CLOSED:
            self.failures.clear()
        return Transition(self.plugin, old, new, reason, len(self.failures))

    def tick(self, now: float) -> Transition | None:
        """Time-driven moves: open → half-open, and overdue half-open trials count as failures."""
        if not self.policy.enabled:
            return None
        if self.state == OPEN and now - self.opened_at >= self.timeout_s:
            return self._move(HALF_OPEN, now, f"open for {self.timeout_s:g}s; trying again")
        if self.state == HALF_OPEN:
            overdue = [key for key, deadline in self.trials.items() if deadline <= now]
            if overdue:
                return self._move(OPEN, now, "a trial request never answered")
        return None

    def allow(self, now: float, key: object, deadline: float) -> tuple[bool, Transition | None]:
        """May a request go to this plugin now? In half-open, ``key`` takes one trial slot."""
        if not self.policy.enabled:
            return True, None
        change = self.tick(now)
        if self.state == CLOSED:
            return True, change
        if self.state == OPEN:
            return False, change
        if len(self.trials) >= max(1, self.policy.half_open_retries) - self.trial_successes:
            return False, change
        self.trials[key] = deadline
        return True, change

    def success(self, now: float, key: object, duration_ms: float) -> Transition | None:
        if not self.policy.enabled:
            return None
        slow = self.policy.slow_call_ms is not None and duration_ms > self.policy.slow_call_ms
        if slow:
            return self.failure(now, key, f"slow call: {duration_ms:.0f} ms > {self.policy.slow_call_ms} ms")
        if self.state == HALF_OPEN and self.trials.pop(key, None) is not None:
            self.trial_successes += 1
            if self.trial_successes >= max(1, self.policy.half_open_retries):
                return self._move(CLOSED, now, f"{self.trial_successes} trial(s) succeeded")
        return None

    def failure(self, now: float, key: object, reason: str) -> Transition | None:
        if not self.policy.enabled:
            return None
        self.failures.append(now)
        if self.state == HALF_OPEN:
            return self._move(OPEN, now, f"a trial failed: {reason}")
        if self.state == CLOSED and self._recent_failures(now) >= self.policy.threshold:
            return self._move(
                OPEN, now, f"{len(self.failures)} failure(s) within {self.policy.window_ms} ms; last: {reason}"
            )
        return None

    def forget(self, key: object) -> None:
        """A trial that ended without saying anything about the plugin (e.g. a client error)."""
        self.trials.pop(key, None)

    def to_json(self, now: float) -> dict[str, object]:
        out: dict[str, object] = {
            "state": self.state,
            "recentFailures": self._recent_failures(now),
            "threshold": self.policy.threshold,
            "transitions": self.transitions,
        }
        if self.state == OPEN:
            out["retryInSeconds"] = round(max(0.0, self.opened_at + self.timeout_s - now), 2)
        if self.state == HALF_OPEN:
            out["trialsInFlight"] = len(self.trials)
        return out


def fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


def base_delay_ms(policy: RetryPolicy, retry: int) -> float:
    """The delay before retry number ``retry`` (1 for the first), before jitter, capped."""
    if policy.backoff == "linear":
        delay = policy.initial_delay_ms * retry
    elif policy.backoff == "fibonacci":
        delay = policy.initial_delay_ms * fibonacci(retry)
    else:
        delay = policy.initial_delay_ms * 2 ** min(retry - 1, 62)
    return float(min(delay, policy.max_delay_ms))


def backoff_ms(policy: RetryPolicy, retry: int, rng: random.Random | None = None) -> float:
    """Backoff with jitter: ±``jitter`` of the base delay, then capped again, so jitter spreads
    retries out but never pushes one past ``max_delay``."""
    delay = base_delay_ms(policy, retry)
    if policy.jitter > 0:
        spread = delay * min(policy.jitter, 1.0)
        delay += (rng or random).uniform(-spread, spread)
    return max(0.0, min(delay, float(policy.max_delay_ms)))


def is_retryable(policy: RetryPolicy, kind: str, code: str | None) -> bool:
    """Client errors never are; otherwise the manifest's list (kinds or codes), all when empty."""
    if code in CLIENT_ERRORS:
        return False
    wanted = {e.lower() for e in policy.retryable_errors}
    if not wanted:
        return True
    return kind in wanted or (code or "").lower() in wanted
