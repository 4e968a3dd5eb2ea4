"""What ``arbiter status`` shows of a running broker: one JSON object, read off its parts.

The field names are part of the protocol (docs/PROTOCOL.md §4.1): scripts and the dashboard
read them.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from typing import Any, Protocol

from arbiter.broker.admission import Admission
from arbiter.broker.chains import ChainDesk
from arbiter.broker.dispatch import Dispatcher
from arbiter.broker.events import EventHub
from arbiter.broker.guard import Guard
from arbiter.broker.helpers import HelperGroup
from arbiter.broker.metrics import Meter
from arbiter.broker.reload import ReloadRecord
from arbiter.broker.settings import Settings
from arbiter.broker.workers import WorkerPool
from arbiter.project.snapshot import Snapshot
from arbiter.wire.mdp import BATCHED, PACKED


class StatusSource(Protocol):
    settings: Settings
    snapshot: Snapshot
    pool: WorkerPool
    admission: Admission
    dispatcher: Dispatcher
    chains: ChainDesk
    events: EventHub | None
    decisions: Any
    dead_letters: Any
    counters: Counter[str]
    dropped: Counter[str]
    reloads: ReloadRecord
    started: float
    deciders: HelperGroup | None
    keepers: HelperGroup | None
    guard: Guard | None
    metrics: Meter


def report(broker: StatusSource) -> dict[str, Any]:
    settings = broker.settings
    return {
        "uptimeSeconds": round(time.time() - broker.started, 1),
        "pid": os.getpid(),
        "maxRssKb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "endpoints": {
            "frontend": settings.frontend,
            "events_pub": settings.events_pub,
            "events_sub": settings.events_sub,
        },
        "services": _services(broker.pool),
        "workers": len(broker.pool.workers),
        "pending": broker.admission.pending_total,
        "clientsWithRequests": len(broker.admission.client_inflight),
        "counters": {**dict(broker.counters), "dropped": dict(broker.dropped)},
        "snapshot": {
            **broker.reloads.state,
            "plugins": len(broker.snapshot.plugins),
            "rules": len(broker.snapshot.rules.ruleset.rules),
        },
        "circuits": {name: b.to_json(time.monotonic()) for name, b in broker.dispatcher.breakers.items()},
        "routedInFlight": len(broker.dispatcher.inflight),
        "chainRuns": len(broker.chains.runs),
        "deciders": _helpers(broker.deciders),
        "stateKeepers": _helpers(broker.keepers),
        "security": broker.guard.status() if broker.guard is not None else {"enabled": False},
        "events": broker.events.stats() if broker.events else {},
        "writers": _writers(broker),
        "latency": broker.metrics.latency_json(),
        "limits": {
            "maxMessageBytes": settings.max_message_bytes,
            "clientInflight": settings.client_inflight,
            "serviceQueue": settings.service_queue,
            "totalPending": settings.total_pending,
            "maxDeliveries": settings.max_deliveries,
        },
    }


def _services(pool: WorkerPool) -> dict[str, Any]:
    return {
        s.shown: {
            "workers": len(s.workers),
            "queued": len(s.queue),
            "inflight": sum(len(w.held) for w in s.workers.values()),
            "credit": sum(w.credit for w in s.workers.values()),
            "packedWorkers": sum(w.delivery == PACKED for w in s.workers.values()),
            "batchedWorkers": sum(w.delivery == BATCHED for w in s.workers.values()),
            "requests": s.requests,
        }
        for s in pool.services.values()
    }


def _helpers(group: HelperGroup | None) -> dict[str, Any]:
    return {"processes": 0, "running": 0, "restarts": 0} if group is None else group.status()


def _writers(broker: StatusSource) -> dict[str, Any]:
    writers = {}
    for name, writer in (("decisions", broker.decisions), ("deadLetters", broker.dead_letters)):
        if writer is not None:
            writers[name] = {"written": writer.written, "dropped": writer.dropped, "errors": writer.errors[-3:]}
    recorder = broker.decisions
    if recorder is not None:
        writers["decisions"].update(queued=recorder.queued, restarts=recorder.restarts, pid=recorder.process.pid)
    letters = broker.dead_letters
    if letters is not None:
        writers["deadLetters"].update(queued=letters.queued, spilled=letters.spilled, inSpill=letters.waiting_in_spill)
    return writers
