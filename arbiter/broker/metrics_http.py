"""The broker's ``/metrics`` (Prometheus text format), served on a thread of its own.

The HTTP thread never reads broker state: the loop thread owns it (:mod:`arbiter.broker.loop`).
Each scrape posts :func:`~arbiter.broker.metrics.reading` to the loop, waits for the copy (at
most ``WAIT_S``), and builds the metric families from that copy. So the hot path pays only for
the counts it keeps anyway (:mod:`arbiter.broker.metrics`); a scrape costs the loop one copy.
docs/METRICS.md lists every metric.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from arbiter.broker.metrics import BOUNDS_S, Histogram, Reading, reading
from arbiter.project.schemas import metrics_address

log = logging.getLogger("arbiter.broker")

WAIT_S = 2.0  # how long a scrape waits for the loop's copy
CIRCUIT_STATES = ("closed", "open", "half-open")
RELOADS = {"ok": "reloads", "refused": "reload-failures", "restored": "reload-restores"}
WORKER_EVENTS = {"joined": "workers-joined", "expired": "workers-expired", "unreachable": "workers-unreachable"}
DEAD_LETTER_PREFIX = "dead-letters-"
CHAIN_RUN_PREFIX = "chain-runs-"


class BrokerCollector:
    """A prometheus_client collector over one broker; ``post`` is ``Broker.post``."""

    def __init__(self, broker: Any, post: Callable[[Callable[[], None]], None], version: str):
        self.broker = broker
        self.post = post
        self.version = version
        self.timeouts = 0
        self._one_at_a_time = threading.Lock()  # concurrent scrapes do not pile copies on the loop

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; the names are fixed below

    def take(self) -> Reading | None:
        """A copy of the broker's numbers made on its loop, or None when the loop did not run
        the copy within ``WAIT_S`` (stopping, or stalled)."""
        box: list[Reading] = []
        done = threading.Event()
        asked = time.monotonic()

        def copy() -> None:
            taken = reading(self.broker)
            taken.took = time.monotonic() - asked
            box.append(taken)
            done.set()

        with self._one_at_a_time:
            self.post(copy)
            if not done.wait(WAIT_S):
                self.timeouts += 1
                return None
        return box[0]

    def collect(self) -> Iterator[Metric]:
        taken = self.take()
        up = GaugeMetricFamily("arbiter_metrics_loop_up", "1 when the broker's loop answered this scrape in time")
        up.add_metric([], 0 if taken is None else 1)
        yield up
        yield _counter("arbiter_metrics_loop_timeouts", "Scrapes the loop did not answer in time", self.timeouts)
        if taken is not None:
            yield from families(taken, self.version)


def families(r: Reading, version: str) -> Iterator[Metric]:
    """The metric families of one reading."""
    info = InfoMetricFamily("arbiter_build", "The broker's version and the snapshot it serves")
    info.add_metric([], {"version": version, "snapshot": r.fingerprint[:12]})
    yield info
    yield _gauge("arbiter_start_time_seconds", "When the broker started (Unix time)", r.started)
    yield _gauge("arbiter_uptime_seconds", "Seconds since the broker started", time.time() - r.started)
    yield _gauge("arbiter_metrics_loop_lag_seconds", "How long this scrape's copy waited for the loop", r.took)
    yield from _services(r)
    yield from _routing(r)
    yield from _plugins(r)
    yield from _bookkeeping(r)


def _services(r: Reading) -> Iterator[Metric]:
    requests = CounterMetricFamily("arbiter_requests", "Requests received, by service", labels=["service"])
    replies = CounterMetricFamily(
        "arbiter_replies", "Replies to clients, by service and outcome", labels=["service", "outcome"]
    )
    for name, stats in sorted(r.services.items()):
        requests.add_metric([name], stats.requests)
        for outcome, count in sorted(stats.outcomes.items()):
            replies.add_metric([name, outcome], count)
    yield requests
    yield replies
    yield _histograms(
        "arbiter_request_duration_seconds",
        "Round trip of a request in the broker, from admission to its reply, by service",
        "service",
        {name: s.latency for name, s in r.services.items()},
    )
    load = {
        "arbiter_service_queue_depth": ("Requests waiting for a worker, by service", "queued"),
        "arbiter_service_inflight": ("Requests held by workers, not yet answered, by service", "inflight"),
        "arbiter_service_workers": ("Workers serving each service", "workers"),
    }
    for metric, (text, attribute) in load.items():
        gauge = GaugeMetricFamily(metric, text, labels=["service"])
        for name, held in sorted(r.load.items()):
            gauge.add_metric([name], getattr(held, attribute))
        yield gauge
    yield _gauge("arbiter_workers", "Workers connected", r.workers)
    yield _gauge("arbiter_pending_requests", "Requests admitted and not yet answered", r.pending)


def _routing(r: Reading) -> Iterator[Metric]:
    yield _histograms(
        "arbiter_decision_duration_seconds",
        "Time from a routed request's admission to its decision (new texts; cache hits are not timed)",
        None,
        {"": r.decisions},
    )
    cache = CounterMetricFamily(
        "arbiter_decision_cache_answers",
        "Routed requests by whether the decision came from the cache",
        labels=["result"],
    )
    cache.add_metric(["hit"], r.counters.get("decision-cache-hits", 0))
    cache.add_metric(["miss"], r.decisions.count)
    yield cache
    yield _gauge("arbiter_routed_inflight", "arbiter.route requests between decision and answer", r.routed_inflight)


def _plugins(r: Reading) -> Iterator[Metric]:
    yield _histograms(
        "arbiter_plugin_try_duration_seconds",
        "A routed try, from sending it to a plugin's worker to its answer, by plugin",
        "plugin",
        {name: p.latency for name, p in r.plugins.items()},
    )
    tries = CounterMetricFamily(
        "arbiter_plugin_tries", "Routed tries by plugin and outcome", labels=["plugin", "outcome"]
    )
    retries = CounterMetricFamily("arbiter_plugin_retries", "Retries of a plugin after a failed try", labels=["plugin"])
    fallbacks = CounterMetricFamily("arbiter_plugin_fallbacks", "Tries at a plugin as a fallback", labels=["plugin"])
    for name, stats in sorted(r.plugins.items()):
        for outcome, count in sorted(stats.tries.items()):
            tries.add_metric([name, outcome], count)
        retries.add_metric([name], stats.retries)
        fallbacks.add_metric([name], stats.fallbacks)
    yield tries
    yield retries
    yield fallbacks
    circuit = GaugeMetricFamily(
        "arbiter_circuit_state",
        "1 for the state each plugin's circuit breaker is in, else 0",
        labels=["plugin", "state"],
    )
    for name, state in sorted(r.circuits.items()):
        for each in CIRCUIT_STATES:
            circuit.add_metric([name, each], 1 if state == each else 0)
    yield circuit
    changes = CounterMetricFamily(
        "arbiter_circuit_transitions", "Circuit breaker changes, by the state entered", labels=["state"]
    )
    for each in CIRCUIT_STATES:
        changes.add_metric([each], r.counters.get(f"circuit-{each}", 0))
    yield changes


def _bookkeeping(r: Reading) -> Iterator[Metric]:
    yield _by(
        "arbiter_dead_letters", "Requests dead-lettered, by reason", "reason", _prefixed(r.counters, DEAD_LETTER_PREFIX)
    )
    yield _by("arbiter_dropped", "Messages and requests dropped or refused, by reason", "reason", r.dropped)
    yield _by(
        "arbiter_reloads", "Snapshot reloads by result", "result", {k: r.counters.get(v, 0) for k, v in RELOADS.items()}
    )
    runs = {"started": r.counters.get("chain-runs", 0), **_prefixed(r.counters, CHAIN_RUN_PREFIX)}
    yield _by("arbiter_chain_runs", "Chain and plan runs started, and ended by state", "state", runs)
    yield _by("arbiter_chain_steps", "Chain steps that reached each state", "state", r.chain_steps)
    yield _gauge("arbiter_chain_runs_inflight", "Chain and plan runs not yet ended", r.chain_runs)
    ops = CounterMetricFamily(
        "arbiter_state_operations", "arbiter.state operations by op and outcome", labels=["op", "outcome"]
    )
    for (op, outcome), count in sorted(r.state_ops.items()):
        ops.add_metric([op, outcome], count)
    yield ops
    yield _counter("arbiter_state_lock_waits", "lock requests refused LOCKED: the caller has to wait", r.lock_waits)
    yield _counter("arbiter_state_changes", "Shared-state changes published", r.counters.get("state-changes", 0))
    workers = {k: r.counters.get(v, 0) for k, v in WORKER_EVENTS.items()}
    yield _by("arbiter_worker_events", "Workers that joined, expired or became unreachable", "event", workers)
    yield _counter(
        "arbiter_redelivered",
        "Requests handed to another worker after theirs was lost",
        r.counters.get("redelivered", 0),
    )
    yield _counter(
        "arbiter_internal_errors", "Failures inside the broker (logged)", r.counters.get("internal-errors", 0)
    )


def _prefixed(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in counters.items() if k.startswith(prefix)}


def _histograms(name: str, text: str, label: str | None, histograms: dict[str, Histogram]) -> Metric:
    family = HistogramMetricFamily(name, text, labels=[label] if label else None)
    for value, histogram in sorted(histograms.items()):
        if label and not histogram.count:
            continue
        family.add_metric([value] if label else [], _cumulative(histogram), histogram.sum)
    return family


def _cumulative(histogram: Histogram) -> list[tuple[str, float]]:
    running, buckets = 0, []
    for bound, count in zip((*(repr(b) for b in BOUNDS_S), "+Inf"), histogram.counts):
        running += count
        buckets.append((bound, running))
    return buckets


def _by(name: str, text: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _counter(name: str, text: str, value: float) -> Metric:
    return CounterMetricFamily(name, text, value=value)


def _gauge(name: str, text: str, value: float) -> Metric:
    return GaugeMetricFamily(name, text, value=value)


class MetricsServer:
    """``/metrics`` on ``address`` for ``broker``, on a daemon thread, until :meth:`close`."""

    def __init__(self, broker: Any, address: str, version: str):
        host, port = metrics_address(address)
        self.registry = CollectorRegistry()
        self.collector = BrokerCollector(broker, broker.post, version)
        self.registry.register(self.collector)  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)  # CPU, memory, open files: read from /proc, not the broker
        self.server, self.thread = start_http_server(port, host, self.registry)
        self.address = f"{host}:{self.server.server_port}"
        log.info("metrics on http://%s/metrics", self.address if ":" not in host else f"[{host}]:{port}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)
