"""The broker's part of ``configs/broker.yaml``, resolved once per snapshot."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Settings:
    frontend: str
    events_pub: str
    events_sub: str
    heartbeat_s: float
    liveness: int
    max_message_bytes: int
    client_inflight: int
    service_queue: int
    total_pending: int
    request_timeout_s: float
    attempt_timeout_s: float
    max_deliveries: int = 3  # deliveries of one request to workers that were lost while holding it
    deciders: int = 0  # decider processes (configs/broker.yaml ``deciders``, ``auto`` resolved)
    decider_priority: str = "idle"  # idle | low | normal (deciders.lower_priority)
    state_keepers: int = 1  # processes serving arbiter.state (keepers)
    metrics_address: str | None = None  # HOST:PORT of /metrics (Prometheus); None: not served
    name: str | None = None  # this broker's name in ``brokers`` (docs/DEPLOYMENT.md); None: not listed
    run_lease_s: float = 15.0  # a chain run's lease, on a store shared with other brokers

    @property
    def lease_owner(self) -> str:
        """Who holds this broker's chain runs: its name, else its frontend (the same after a restart)."""
        return self.name or self.frontend

    @property
    def worker_patience_s(self) -> float:
        """How long a silent worker is still believed alive (MDP: heartbeat × liveness)."""
        return self.heartbeat_s * self.liveness

    @classmethod
    def of(cls, config: Mapping[str, Any], **overrides: str | None) -> Settings:
        name, endpoints = listed_broker(config, overrides.get("name"), overrides.get("frontend"))
        limits = config["limits"]
        return cls(
            frontend=overrides.get("frontend") or endpoints["frontend"],
            events_pub=overrides.get("events_pub") or endpoints["events_pub"],
            events_sub=overrides.get("events_sub") or endpoints["events_sub"],
            heartbeat_s=config["heartbeat"]["interval_ms"] / 1000,
            liveness=config["heartbeat"]["liveness"],
            max_message_bytes=limits["max_message_bytes"],
            client_inflight=limits["client_inflight"],
            service_queue=limits["service_queue"],
            total_pending=limits["total_pending"],
            request_timeout_s=config["request_timeout_ms"] / 1000,
            attempt_timeout_s=config["dispatch"]["attempt_timeout_ms"] / 1000,
            max_deliveries=limits.get("max_deliveries", 3),
            deciders=decider_count(config.get("deciders", "auto")),
            decider_priority=config.get("decider_priority", "idle"),
            state_keepers=config.get("state_keepers", 1),
            metrics_address=overrides.get("metrics") or (config.get("metrics") or {}).get("address"),
            name=name,
            run_lease_s=config.get("run_lease_ms", 15_000) / 1000,
        )


def listed_broker(
    config: Mapping[str, Any], name: str | None, frontend: str | None
) -> tuple[str | None, Mapping[str, Any]]:
    """Which broker of ``brokers`` this is, and its endpoints: the one named ``name`` (``--name``),
    else the one whose frontend is ``frontend`` or ``endpoints.frontend``; none: ``endpoints``."""
    listed = config.get("brokers") or []
    if name is not None:
        for entry in listed:
            if entry["name"] == name:
                return name, entry
        known = ", ".join(entry["name"] for entry in listed) or "none"
        raise ValueError(f"no broker named {name!r} in configs/broker.yaml brokers (known: {known})")
    wanted = frontend or config["endpoints"]["frontend"]
    for entry in listed:
        if entry["frontend"] == wanted:
            return entry["name"], entry
    return None, config["endpoints"]


MAX_AUTO_DECIDERS = 8  # each holds a snapshot of its own: memory, not cores, bounds them on big hosts


def decider_count(setting: int | str) -> int:
    """``auto``: one decider per core but the broker loop's, at least one and at most
    ``MAX_AUTO_DECIDERS`` (on two cores a second decider took CPU from forwarding and won little
    routing: docs/PERFORMANCE.md)."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_DECIDERS, cores - 1))
