"""Circuit breaker transitions and retry backoff, with an explicit clock."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from arbiter.broker.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, backoff_ms, base_delay_ms, is_retryable
from arbiter.project.model import CircuitBreakerPolicy, RetryPolicy

POLICY = CircuitBreakerPolicy(threshold=3, timeout_ms=1000, half_open_retries=2, window_ms=5000, slow_call_ms=500)


def breaker() -> CircuitBreaker:
    return CircuitBreaker("p", POLICY)


def test_opens_after_threshold_failures_within_the_window() -> None:
    b = breaker()
    assert b.failure(0.0, "a", "x") is None
    assert b.failure(1.0, "b", "x") is None
    change = b.failure(2.0, "c", "boom")
    assert change is not None and (change.old, change.new) == (CLOSED, OPEN) and "boom" in change.reason
    assert b.allow(2.5, "d", 10.0) == (False, None)


def test_failures_outside_the_window_do_not_count() -> None:
    b = breaker()
    b.failure(0.0, "a", "x")
    b.failure(1.0, "b", "x")
    assert b.failure(7.0, "c", "x") is None  # the first two are older than 5 s
    assert b.state == CLOSED


def test_half_open_closes_after_enough_successful_trials() -> None:
    b = breaker()
    for t in range(3):
        b.failure(float(t), t, "x")
    allowed, change = b.allow(3.1, "t1", 20.0)
    assert allowed and change is not None and change.new == HALF_OPEN
    assert b.allow(3.1, "t2", 20.0)[0]
    assert not b.allow(3.1, "t3", 20.0)[0], "only half_open_retries trials at once"
    assert b.success(3.2, "t1", 10) is None
    change = b.success(3.3, "t2", 10)
    assert change is not None and change.new == CLOSED
    assert b.allow(3.4, "n", 20.0) == (True, None)


def test_half_open_reopens_on_a_failed_trial() -> None:
    b = breaker()
    for t in range(3):
        b.failure(float(t), t, "x")
    b.allow(3.5, "t1", 20.0)
    change = b.failure(3.6, "t1", "again")
    assert change is not None and (change.old, change.new) == (HALF_OPEN, OPEN)


def test_half_open_never_gets_stuck_on_a_lost_trial() -> None:
    b = breaker()
    for t in range(3):
        b.failure(float(t), t, "x")
    b.allow(3.5, "lost", 4.0)  # this trial never reports back
    b.allow(3.5, "lost-too", 4.0)
    assert not b.allow(3.9, "blocked", 9.0)[0]
    change = b.tick(4.1)
    assert change is not None and change.new == OPEN and "never answered" in change.reason
    change = b.tick(5.2)
    assert change is not None and change.new == HALF_OPEN
    assert b.allow(5.2, "fresh", 9.0)[0]


def test_a_slow_success_counts_as_a_failure() -> None:
    b = breaker()
    for t in range(3):
        b.success(float(t), t, 900)
    assert b.state == OPEN


def test_disabled_breaker_always_allows() -> None:
    b = CircuitBreaker("p", CircuitBreakerPolicy(enabled=False, threshold=1))
    b.failure(0, "a", "x")
    assert b.allow(0.1, "b", 1)[0] and b.state == CLOSED


def test_backoff_shapes() -> None:
    linear = RetryPolicy(backoff="linear", initial_delay_ms=100, max_delay_ms=10_000, jitter=0)
    expo = RetryPolicy(backoff="exponential", initial_delay_ms=100, max_delay_ms=10_000, jitter=0)
    fib = RetryPolicy(backoff="fibonacci", initial_delay_ms=100, max_delay_ms=10_000, jitter=0)
    assert [base_delay_ms(linear, n) for n in range(1, 6)] == [100, 200, 300, 400, 500]
    assert [base_delay_ms(expo, n) for n in range(1, 6)] == [100, 200, 400, 800, 1600]
    assert [base_delay_ms(fib, n) for n in range(1, 7)] == [100, 100, 200, 300, 500, 800]
    assert base_delay_ms(expo, 200) == 10_000


@given(
    backoff=st.sampled_from(["linear", "exponential", "fibonacci"]),
    initial=st.integers(0, 5_000),
    cap=st.integers(0, 20_000),
    jitter=st.floats(0, 1),
    retry=st.integers(1, 100),
    seed=st.integers(0, 2**32),
)
def test_jitter_never_breaks_the_cap(
    backoff: str, initial: int, cap: int, jitter: float, retry: int, seed: int
) -> None:
    policy = RetryPolicy(backoff=backoff, initial_delay_ms=initial, max_delay_ms=cap, jitter=jitter)
    delay = backoff_ms(policy, retry, random.Random(seed))
    base = base_delay_ms(policy, retry)
    assert 0 <= delay <= cap
    assert base * (1 - jitter) - 1e-6 <= delay <= base * (1 + jitter) + 1e-6


def test_retryable_classes() -> None:
    policy = RetryPolicy(retryable_errors=("timeout", "unavailable"))
    assert is_retryable(policy, "timeout", None)
    assert is_retryable(policy, "unavailable", None)
    assert not is_retryable(policy, "error", "HANDLER_ERROR")
    assert not is_retryable(RetryPolicy(), "error", "BAD_PARAMETERS")
    assert is_retryable(RetryPolicy(), "error", "HANDLER_ERROR")
    assert is_retryable(RetryPolicy(retryable_errors=("handler_error",)), "error", "HANDLER_ERROR")
