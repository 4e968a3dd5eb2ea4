"""Stopping in order: take no new requests, let workers finish what they hold (bounded by
``GRACE_S``), and answer everything else with ``SHUTTING_DOWN`` and a dead letter.

Nothing accepted is dropped silently: a request the broker cannot finish is answered and kept in
the dead-letter queue, to be replayed by an operator.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from arbiter.broker.admission import Admission
from arbiter.broker.chains import ChainDesk
from arbiter.broker.clients import Clients
from arbiter.broker.dispatch import Dispatcher
from arbiter.broker.workers import Pending, WorkerPool

log = logging.getLogger("arbiter.broker")

GRACE_S = 5.0
STOPPING = "the broker is stopping"
STOPPED = "the broker stopped before the worker answered"


class ShutdownHost(Protocol):
    pool: WorkerPool
    dispatcher: Dispatcher
    admission: Admission
    clients: Clients
    chains: ChainDesk

    @property
    def stopping(self) -> bool: ...

    def begin_stopping(self) -> None: ...

    def call_at(self, when: float, action: Callable[[], None]) -> None: ...

    def end(self) -> None: ...


def begin(host: ShutdownHost) -> None:
    """Refuse what waits; routed requests whose try no worker holds end now, the others at the
    end of the grace period at the latest. The end of the grace period is booked first, so the
    broker stops in time whatever happens to any one request below."""
    if host.stopping:
        return
    host.begin_stopping()
    host.call_at(time.monotonic() + GRACE_S, lambda: abandon(host))
    host.chains.detach()  # runs stay stored as they are, and go on when the broker starts again
    log.info("stopping: %d request(s) in flight", host.admission.pending_total)
    held = {id(p) for p in host.pool.held()}
    _fail_queued(host, STOPPING)
    for routed in list(host.dispatcher.inflight):
        attempt = routed.current
        if attempt is None or attempt.finished or id(attempt.pending) not in held:
            _each(lambda routed=routed: host.dispatcher.fail(routed, "SHUTTING_DOWN", STOPPING, "shutdown"))
    if not host.admission.pending_total:
        host.end()


def abandon(host: ShutdownHost) -> None:
    """The grace period is over: answer what workers still hold, and end the loop, whatever fails."""
    try:
        for worker in list(host.pool.workers.values()):
            for pending in list(worker.held.values()):
                _each(lambda pending=pending: _give_up(host, pending, STOPPED))
            worker.held.clear()
        _fail_queued(host, STOPPED)  # what a worker that left during the grace period gave back
        for routed in list(host.dispatcher.inflight):
            _each(lambda routed=routed: host.dispatcher.fail(routed, "SHUTTING_DOWN", STOPPED, "shutdown"))
    finally:
        host.end()


def _each(answer: Callable[[], None]) -> None:
    """Answer one request; a failure is logged and the shutdown goes on with the others."""
    try:
        answer()
    except Exception:
        log.exception("could not answer a request while stopping")


def _fail_queued(host: ShutdownHost, message: str) -> None:
    """Answer every request still waiting for a worker: a direct one itself, a try (of a routed
    request, or a decision asked of a decider) through the request it was for."""
    for pending in host.pool.take_queued():
        _each(lambda pending=pending: _give_up(host, pending, message))


def _give_up(host: ShutdownHost, pending: Pending, message: str) -> None:
    if pending.answered:
        return
    attempt = pending.attempt
    if attempt is None:
        host.clients.fail(pending, "SHUTTING_DOWN", message, "shutdown")
    elif not attempt.settled:
        pending.answered, pending.attempt = True, None
        attempt.lost("SHUTTING_DOWN", message, "shutdown")
