"""The broker's part of ``configs/broker.yaml``, resolved once per snapshot."""

from __future__ import annotations

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

    @property
    def worker_patience_s(self) -> float:
        """How long a silent worker is still believed alive (MDP: heartbeat × liveness)."""
        return self.heartbeat_s * self.liveness

    @classmethod
    def of(cls, config: Mapping[str, Any], **overrides: str | None) -> Settings:
        endpoints = config["endpoints"]
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
        )
