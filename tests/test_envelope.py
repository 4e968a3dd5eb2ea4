"""The envelope helpers: the timestamp replies carry stays right when threads share its cache."""

from __future__ import annotations

import sys
import time
import types
from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from arbiter.wire import envelope as env

SECOND = 1_700_000_000


def _switching_everywhere(module: types.ModuleType, now: float, other: float, warm: float) -> list[str]:
    """Call ``module.now_iso`` at ``now`` once for every bytecode it runs, each time letting
    another call at ``other`` (as another thread would) run just before that bytecode; the cache
    is warmed at ``warm`` before each call. Returns what the first call printed, each time."""
    clock = {"now": warm}
    fake = types.SimpleNamespace(time=lambda: clock["now"], gmtime=time.gmtime, strftime=time.strftime)
    real, previous = module.time, sys.gettrace()
    module.time = fake
    try:
        printed = []
        for switch_at in range(_steps(module, clock, now, warm)):
            clock["now"] = warm
            module.now_iso()
            clock["now"] = now
            printed.append(_traced(module, lambda step, at=switch_at: step == at and _other_call(module, clock, other)))
        return printed
    finally:
        module.time = real
        sys.settrace(previous)


def _other_call(module: types.ModuleType, clock: dict[str, float], other: float) -> None:
    mine, clock["now"] = clock["now"], other
    module.now_iso()  # tracing is off inside a trace function: this call runs whole
    clock["now"] = mine


def _steps(module: types.ModuleType, clock: dict[str, float], now: float, warm: float) -> int:
    clock["now"] = warm
    module.now_iso()
    clock["now"] = now
    seen: list[int] = []
    _traced(module, seen.append)
    return len(seen)


def _traced(module: types.ModuleType, at_step: Callable[[int], Any]) -> str:
    """``module.now_iso()`` with ``at_step(n)`` called before its n-th bytecode."""
    code, steps = module.now_iso.__code__, iter(range(10_000))

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            at_step(next(steps))
        return local

    def calls(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes = True
        return local

    sys.settrace(calls)
    try:
        return module.now_iso()
    finally:
        sys.settrace(None)


def _iso(moment: float) -> str:
    return env.iso(datetime.fromtimestamp(moment, timezone.utc))


@pytest.mark.parametrize(
    ("warm", "other"),
    [
        (SECOND - 1, SECOND + 1.5),
        (SECOND + 0.1, SECOND + 1.5),
        (SECOND + 0.1, SECOND - 1.5),
        (SECOND - 1, SECOND - 1.5),
    ],
)
def test_now_iso_prints_its_own_second_whatever_another_thread_does_meanwhile(warm: float, other: float) -> None:
    now = SECOND + 0.25
    printed = _switching_everywhere(env, now, other, warm)
    assert len(printed) > 10 and set(printed) == {_iso(now)}


def test_now_iso_matches_iso() -> None:
    before = datetime.now(timezone.utc)
    printed = env.now_iso()
    after = datetime.now(timezone.utc)
    assert printed.endswith("Z") and len(printed) == len("2024-01-01T00:00:00.000Z")
    assert env.iso(before)[:19] <= printed[:19] <= env.iso(after)[:19]
