"""What the broker measures of itself, kept on the loop thread in plain lists and dicts: round-trip
histograms per service and per routed plugin, decision time, requests and replies by outcome,
plugin tries, retries and fallbacks, chain steps, shared-state operations. ``arbiter status``
shows the histograms (``latency``) and :mod:`arbiter.broker.metrics_http` exports all of it to
Prometheus, reading a copy the loop takes (:func:`reading`).

Why not prometheus_client's own ``Histogram``: its ``labels(...).observe()`` takes a lock and
looks its child up by a label tuple, ten times the cost of a ``bisect`` into a list of counts
(docs/PERFORMANCE.md). The loop is the only writer of these numbers, so they need no lock; the
exporter turns the copy into metric families at scrape time.

Label values stay bounded: a service is named only when it is one of the project's plugins, one
of the broker's own services (``arbiter.*``, its helpers' public names) or MMI (``mmi``); any
name a client made up counts as ``other``. Outcomes are a closed set too.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

BOUNDS_MS: tuple[float, ...] = (0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
BOUNDS_S: tuple[float, ...] = tuple(b / 1000 for b in BOUNDS_MS)
OTHER = "other"  # the label of every service name that is neither the project's nor the broker's
MMI = "mmi"
# What a reply said, as a label: "ok", the broker's error codes in kebab case, else "error".
OUTCOMES = frozenset(
    {
        "ok", "error", "cached", "expired", "poison", "shutting-down", "queue-full", "inflight-limit",
        "too-large", "bad-envelope", "bad-request", "unknown-service", "forbidden", "internal-error",
        "unavailable", "exhausted", "cancelled",
    }
)  # fmt: skip
ROUTED_STATUS = {"success": "ok", "shutdown": "shutting-down"}  # a routed request's end, as an outcome
STATE_OUTCOMES = frozenset(
    {"ok", "not-found", "conflict", "forbidden", "stale-fence", "locked", "bad-request", "unavailable",
     "store-unavailable"}
)  # fmt: skip
ERROR_MARK = b'"payload":{"status":"error"'  # how the broker's own error envelopes begin their payload


def outcome_label(code: str, allowed: frozenset[str] = OUTCOMES) -> str:
    """``QUEUE_FULL`` -> ``queue-full``; anything outside ``allowed`` -> ``error``."""
    label = code.lower().replace("_", "-")
    return label if label in allowed else "error"


class Histogram:
    """Counts per bucket of ``BOUNDS_S`` (not cumulative; the last counts what is above the
    largest bound) and the sum of what was observed, in seconds."""

    __slots__ = ("counts", "sum")

    def __init__(self, counts: list[int] | None = None, total: float = 0.0):
        self.counts = counts if counts is not None else [0] * (len(BOUNDS_S) + 1)
        self.sum = total

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS_S, seconds)] += 1  # bisect_left: a value on a bound is "le" it
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.sum)

    def to_json(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sumMs": round(self.sum * 1000, 3)}


@dataclass(eq=False, slots=True)
class ServiceStats:
    """One service label: requests received, replies by outcome, round trips of those answered."""

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)

    def copy(self) -> ServiceStats:
        return ServiceStats(self.requests, Counter(self.outcomes), self.latency.copy())


@dataclass(eq=False, slots=True)
class PluginStats:
    """One routed plugin: its tries by how each ended, retries, fallbacks to it, answer times."""

    tries: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    fallbacks: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def copy(self) -> PluginStats:
        return PluginStats(Counter(self.tries), self.retries, self.fallbacks, self.latency.copy())


class Meter:
    """The broker's measurements; the loop thread's alone (the exporter reads a copy)."""

    def __init__(self, own: Iterable[str], plugins: Iterable[str] = ()):
        self.own = frozenset(own)
        self.plugin_names: frozenset[str] = frozenset()
        self.known: frozenset[str] = self.own
        self.services: dict[str, ServiceStats] = {}  # by label
        self.plugins: dict[str, PluginStats] = {}  # by label
        self.decisions = Histogram()
        self.chain_steps: Counter[str] = Counter()  # steps that reached each state
        self.state_ops: Counter[tuple[str, str]] = Counter()  # (op, outcome)
        self.lock_waits = 0
        self._frames: dict[bytes, ServiceStats] = {}  # service frame -> its stats, known names only
        self.adopt(plugins)

    def adopt(self, plugins: Iterable[str]) -> None:
        """A new snapshot: its plugins are the services and plugins named in labels from now on."""
        self.plugin_names = frozenset(plugins)
        self.known = self.own | self.plugin_names
        self._frames.clear()

    def label(self, name: str) -> str:
        if name in self.known:
            return name
        return MMI if name.startswith("mmi.") else OTHER

    # -- services: the client side -------------------------------------------------------------

    def service(self, frame: bytes) -> ServiceStats:
        stats = self._frames.get(frame)
        if stats is not None:
            return stats
        label = self.label(frame.decode("utf-8", "replace"))
        stats = self.services.get(label)
        if stats is None:
            stats = self.services[label] = ServiceStats()
        if label not in (OTHER, MMI):  # made-up names are looked up again, never kept
            self._frames[frame] = stats
        return stats

    def request(self, frame: bytes) -> None:
        self.service(frame).requests += 1

    def answered(self, frame: bytes, received: float, outcome: str = "ok") -> None:
        """A request admitted at monotonic ``received`` has its answer on the way to the client."""
        stats = self.service(frame)
        stats.latency.observe(time.monotonic() - received)
        stats.outcomes[outcome] += 1

    def answered_body(self, frame: bytes, received: float, body: bytes) -> None:
        """An own service's answer: ok, or error when the envelope says so."""
        self.answered(frame, received, "error" if ERROR_MARK in body else "ok")

    def answered_routed(self, frame: bytes, received: float, status: str) -> None:
        self.answered(frame, received, outcome_label(ROUTED_STATUS.get(status, status)))

    def replied_at_once(self, frame: bytes, code: str) -> None:
        """Answered without being admitted (refused, MMI): no round trip to time."""
        self.service(frame).outcomes[outcome_label(code)] += 1

    # -- routed plugins, decisions, chains, shared state ---------------------------------------

    def plugin(self, name: str) -> PluginStats:
        stats = self.plugins.get(name)
        if stats is None:
            label = name if name in self.plugin_names else OTHER
            stats = self.plugins.get(label)
            if stats is None:
                stats = self.plugins[label] = PluginStats()
        return stats

    def step(self, plugin: str, outcome: str) -> None:
        """One step of a routed request at ``plugin``: success, error, timeout, circuit-open, ..."""
        self.plugin(plugin).tries[outcome] += 1

    def try_answered(self, plugin: str, seconds: float) -> None:
        self.plugin(plugin).latency.observe(seconds)

    def retry(self, plugin: str) -> None:
        self.plugin(plugin).retries += 1

    def fallback(self, plugin: str) -> None:
        self.plugin(plugin).fallbacks += 1

    def decided(self, seconds: float) -> None:
        self.decisions.observe(seconds)

    def chain_step(self, state: str) -> None:
        self.chain_steps[state] += 1

    def state_op(self, op: str, code: str | None) -> None:
        outcome = "ok" if code is None else outcome_label(code, STATE_OUTCOMES)
        self.state_ops[(op, outcome)] += 1
        if op == "lock" and outcome == "locked":
            self.lock_waits += 1

    def latency_json(self) -> dict[str, Any]:
        """``arbiter status``'s ``latency`` (docs/PROTOCOL.md §4.1)."""
        return {
            "boundsMs": list(BOUNDS_MS),
            "services": {name: s.latency.to_json() for name, s in self.services.items() if s.latency.count},
            "plugins": {name: p.latency.to_json() for name, p in self.plugins.items() if p.latency.count},
            "decisions": self.decisions.to_json(),
        }


@dataclass
class ServiceLoad:
    """What one service label holds now (several made-up names add up under ``other``)."""

    workers: int = 0
    queued: int = 0
    inflight: int = 0


@dataclass
class Reading:
    """Everything the exporter shows, copied on the loop thread: plain numbers, no live objects."""

    services: dict[str, ServiceStats]
    plugins: dict[str, PluginStats]
    decisions: Histogram
    load: dict[str, ServiceLoad]
    circuits: dict[str, str]  # plugin -> closed | open | half-open
    counters: dict[str, int]
    dropped: dict[str, int]
    chain_steps: dict[str, int]
    state_ops: dict[tuple[str, str], int]
    lock_waits: int
    workers: int
    pending: int
    routed_inflight: int
    chain_runs: int
    started: float  # epoch seconds
    fingerprint: str
    took: float = 0.0  # seconds from the scrape's post to the loop running it


def reading(broker: Any) -> Reading:
    """Copy what the exporter shows; runs on the loop thread (through ``Broker.post``)."""
    meter: Meter = broker.metrics
    load: dict[str, ServiceLoad] = {}
    for service in broker.pool.services.values():
        held = load.setdefault(meter.label(service.shown), ServiceLoad())
        held.workers += len(service.workers)
        held.queued += len(service.queue)
        held.inflight += sum(len(w.held) for w in service.workers.values())
    return Reading(
        services={name: s.copy() for name, s in meter.services.items()},
        plugins={name: p.copy() for name, p in meter.plugins.items()},
        decisions=meter.decisions.copy(),
        load=load,
        circuits={name: b.state for name, b in broker.dispatcher.breakers.items()},
        counters=dict(broker.counters),
        dropped=dict(broker.dropped),
        chain_steps=dict(meter.chain_steps),
        state_ops=dict(meter.state_ops),
        lock_waits=meter.lock_waits,
        workers=len(broker.pool.workers),
        pending=broker.admission.pending_total,
        routed_inflight=len(broker.dispatcher.inflight),
        chain_runs=len(broker.chains.runs),
        started=broker.started,
        fingerprint=broker.snapshot.fingerprint,
    )
