"""Time series of the last few minutes, built from successive ``arbiter.status`` polls: request
and reply rates and errors from the differences of the status ``counters``, latency percentiles
from the differences of the ``latency`` histograms (when the broker reports them).

The broker's counters only ever grow while it runs; a smaller value means it restarted, and that
poll starts the series over instead of drawing a negative rate."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
KEEP_POINTS = 300  # five minutes at one poll a second


def error_count(counters: Mapping[str, Any]) -> int:
    """Everything the broker dropped or dead-lettered: the ``dropped`` reasons and ``dead-letters-*``."""
    dropped = counters.get("dropped") or {}
    total = sum(v for v in dropped.values() if isinstance(v, (int, float))) if isinstance(dropped, Mapping) else 0
    total += sum(v for k, v in counters.items() if k.startswith("dead-letters-") and isinstance(v, (int, float)))
    return int(total)


def summed_counts(latency: Mapping[str, Any] | None, section: str = "services") -> list[int] | None:
    """One histogram for all services (or plugins): their bucket counts added up; None without one."""
    if not isinstance(latency, Mapping) or not isinstance(latency.get(section), Mapping):
        return None
    total: list[int] = []
    for entry in latency[section].values():
        counts = entry.get("counts") if isinstance(entry, Mapping) else None
        if not isinstance(counts, list):
            continue
        if len(total) < len(counts):
            total += [0] * (len(counts) - len(total))
        for index, count in enumerate(counts):
            total[index] += int(count) if isinstance(count, (int, float)) else 0
    return total


def percentile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram (non-cumulative ``counts``, one more than ``bounds``: the
    last is above the largest bound), interpolated within its bucket; None when it is empty."""
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    wanted = q * total
    seen = 0.0
    for index, count in enumerate(counts):
        if count and seen + count >= wanted:
            if index >= len(bounds):
                return float(bounds[-1])  # above the largest bound: the bound is what is known
            lower = 0.0 if index == 0 else float(bounds[index - 1])
            return lower + (float(bounds[index]) - lower) * (wanted - seen) / count
        seen += count
    return float(bounds[-1])


@dataclass
class Sample:
    """What one poll contributes: when, the counters, the summed latency histogram."""

    at: float
    requests: int
    replies: int
    errors: int
    bounds: list[float] | None
    counts: list[int] | None

    @classmethod
    def of(cls, status: Mapping[str, Any], at: float) -> Sample:
        counters = status.get("counters") or {}
        latency = status.get("latency")
        bounds = latency.get("boundsMs") if isinstance(latency, Mapping) else None
        return cls(
            at,
            int(counters.get("requests", 0)),
            int(counters.get("replies", 0)) + int(counters.get("routed-replies", 0)),
            error_count(counters),
            list(bounds) if isinstance(bounds, list) else None,
            summed_counts(latency),
        )

    def went_back(self, before: Sample) -> bool:
        return self.requests < before.requests or self.replies < before.replies or self.errors < before.errors


def point(before: Sample, now: Sample) -> dict[str, Any]:
    """One point of the charts: rates per second over the interval, and its latency percentiles."""
    span = max(now.at - before.at, 1e-3)
    data: dict[str, Any] = {
        "t": round(now.at * 1000),
        "requests": round((now.requests - before.requests) / span, 2),
        "replies": round((now.replies - before.replies) / span, 2),
        "errors": round((now.errors - before.errors) / span, 2),
    }
    if now.bounds and now.counts is not None and before.counts is not None and len(now.counts) == len(before.counts):
        window = [max(0, a - b) for a, b in zip(now.counts, before.counts)]
        for name, q in QUANTILES:
            value = percentile(now.bounds, window, q)
            data[name] = None if value is None else round(value, 3)
    return data


@dataclass
class Series:
    """The last ``keep`` points; :meth:`add` takes each poll's status and returns its point."""

    keep: int = KEEP_POINTS
    points: deque[dict[str, Any]] = field(default_factory=deque)
    _last: Sample | None = None

    def add(self, status: Mapping[str, Any], at: float | None = None) -> dict[str, Any] | None:
        sample = Sample.of(status, time.time() if at is None else at)
        before, self._last = self._last, sample
        if before is None or sample.went_back(before):
            return None
        data = point(before, sample)
        self.points.append(data)
        while len(self.points) > self.keep:
            self.points.popleft()
        return data

    def reset(self) -> None:
        """The broker went away: the next poll starts the differences over."""
        self._last = None

    def to_json(self) -> list[dict[str, Any]]:
        return list(self.points)
