"""The client side of MDP: a request passes the limits, then goes to a service's workers, to one
of Arbiter's own services or to MMI; and every answer the broker gives a client, including
when it refuses a request or gives one up.

A request the broker accepted and then cannot finish (expired, poisoned, cut by a shutdown) is
answered with an error and kept in the dead-letter queue; one refused at once (too large,
unreadable, over an in-flight limit, a full queue) is only answered and counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Protocol

from arbiter.broker import messages as svc
from arbiter.broker.admission import Admission
from arbiter.broker.dispatch import Dispatcher
from arbiter.broker.metrics import Meter, outcome_label
from arbiter.broker.services import mmi
from arbiter.broker.services.base import ServiceHost
from arbiter.broker.services.catalog import OWN_SERVICES
from arbiter.broker.workers import Pending, Service, WorkerPool, WorkerState
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01, MMI_PREFIX, OWN_PREFIX, ProtocolError, service_name
from arbiter.wire.trace import parse_traceparent

log = logging.getLogger("arbiter.broker")


class ClientsHost(ServiceHost, Protocol):
    """What the client side asks of the broker (own services get the broker as their host)."""

    pool: WorkerPool
    admission: Admission
    dispatcher: Dispatcher
    dropped: Counter[str]
    dead_letters: Any
    metrics: Meter

    @property
    def stopping(self) -> bool: ...

    def send(self, frames: list[bytes], worker: WorkerState | None = None, drop: str | None = None) -> None: ...


class Clients:
    """Requests from clients and the broker's answers to them; the loop thread's alone."""

    def __init__(self, host: ClientsHost):
        self.host = host

    def on_request(self, client: bytes, service_frame: bytes, body: list[bytes]) -> None:
        self.host.counters["requests"] += 1
        self.host.metrics.request(service_frame)
        service = self.host.pool.services.get(service_frame)
        if service is not None:
            service_frame = service.frame  # one bytes object per service, not one per waiting request
        else:
            try:
                name = service_name(service_frame)
            except ProtocolError as exc:
                self.host.dropped[exc.reason] += 1
                self.host.metrics.replied_at_once(service_frame, "BAD_REQUEST")
                self.reply_error(client, service_frame, body, "BAD_REQUEST", str(exc))
                return
            if name.startswith(MMI_PREFIX):
                self.host.counters["mmi"] += 1
                self.host.metrics.replied_at_once(service_frame, "ok")
                self.send_client(client, service_frame, [mmi.answer(name, body, OWN_SERVICES, self._served)])
                return
            if name.startswith(OWN_PREFIX):
                self._on_own_service(client, service_frame, name, body)
                return
        pending = self._admit(client, service_frame, body)
        if pending is None:
            return
        try:
            self._to_service(service, pending)
        except Exception as exc:  # one request's failure stays with it: answered, its slot freed
            self._internal_error(pending, exc)

    def _to_service(self, service: Service | None, pending: Pending) -> None:
        """Queue a direct request for a worker of its service, or refuse it."""
        if self.host.stopping:
            self.fail(pending, "SHUTTING_DOWN", "the broker is stopping", "shutdown")
            return
        if service is None:
            service = self.host.pool.service(pending.service_frame)
        if not self.host.pool.submit(service, self._with_deadline(pending, service)):
            self.host.admission.release(pending)
            message = f"the queue of service '{service.shown}' is full ({self.host.settings.service_queue})"
            self.reject(pending.client, pending.service_frame, pending.body, "QUEUE_FULL", message)

    def _internal_error(self, pending: Pending, exc: BaseException) -> None:
        log.error("internal error on a request to %s", pending.service_frame.decode("utf-8", "replace"), exc_info=exc)
        self.host.dropped["internal-error"] += 1
        if not pending.answered:
            self.host.admission.release(pending)
            self.host.metrics.answered(pending.service_frame, pending.received, "internal-error")
            body = svc.error_body(pending.body, "INTERNAL_ERROR", "the broker failed on this request; it is logged")
            self.send_client(pending.client, pending.service_frame, [body])

    def _admit(self, client: bytes, service_frame: bytes, body: list[bytes]) -> Pending | None:
        """The request as the broker holds it, once it passed the limits; a refused one is answered."""
        refusal = self.host.admission.too_large(body)
        if refusal is not None:
            self.reject(client, service_frame, body, *refusal)
            return None
        refusal = self.host.admission.admit(client)
        if refusal is not None:
            self.reject(client, service_frame, body, *refusal)
            return None
        now = time.monotonic()
        return Pending(client, service_frame, body, now + self.host.settings.request_timeout_s, now)

    def _with_deadline(self, pending: Pending, service: Service) -> Pending:
        """A request that has to wait expires at its envelope's expiresAt, when it has one; one
        that goes straight to a worker is not parsed (plain MDP bodies never are)."""
        if service.ready and not service.queue:
            return pending
        body = pending.body
        if len(body) != 1 or body[0][:1] != b"{":
            return pending
        envelope = env.as_envelope(body[0])
        if envelope is not None:
            pending.message_id = envelope["messageId"]
            left = svc.seconds_left(envelope, self.host.settings.request_timeout_s)
            pending.deadline = min(pending.deadline, time.monotonic() + left)
        return pending

    def _served(self, frame: bytes) -> bool:
        service = self.host.pool.services.get(frame)
        return service is not None and bool(service.workers)

    def _on_own_service(self, client: bytes, service_frame: bytes, name: str, body: list[bytes]) -> None:
        service = OWN_SERVICES.get(name)
        if service is None:
            self.host.dropped["unknown-service"] += 1
            self.host.metrics.replied_at_once(service_frame, "UNKNOWN_SERVICE")
            message = f"no service '{name}'; Arbiter serves {', '.join(OWN_SERVICES)}"
            self.reply_error(client, service_frame, body, "UNKNOWN_SERVICE", message)
            return
        pending = self._admit(client, service_frame, body)
        if pending is None:
            return
        try:
            service.execute(self.host, pending, service.read(body))
        except svc.BadRequest as exc:
            self.host.admission.release(pending)
            self.reject(client, service_frame, body, exc.code, str(exc))
        except Exception as exc:  # a bug in a service must not cost more than this request
            self._internal_error(pending, exc)

    # -- answering and giving up ------------------------------------------------------

    def send_client(self, client: bytes, service_frame: bytes, body: list[bytes]) -> None:
        self.host.send([client, b"", MDPC01, service_frame, *body], None, "client-unreachable")

    def reply(self, pending: Pending, body: bytes) -> None:
        self.host.admission.release(pending)
        self.host.metrics.answered_body(pending.service_frame, pending.received, body)
        self.send_client(pending.client, pending.service_frame, [body])

    def finish(self, pending: Pending, body: list[bytes]) -> None:
        """A worker answered ``pending``: to its client, or to the owner of a try."""
        attempt = pending.attempt
        if attempt is not None:
            # Pending and its try refer to each other; unlinked, both are freed by reference
            # counting as soon as the request is done, instead of waiting for the cycle collector.
            pending.attempt = None
            self.host.counters["routed-replies"] += 1
            attempt.answered(body)
            return
        self.host.admission.release(pending)
        self.host.counters["replies"] += 1
        self.host.metrics.answered(pending.service_frame, pending.received)
        self.send_client(pending.client, pending.service_frame, body)

    def expire(self, pending: Pending, message: str) -> None:
        self.host.dropped["expired"] += 1
        self._give_up(pending, "EXPIRED", message, "expired")

    def poisoned(self, pending: Pending) -> None:
        """Every worker that held ``pending`` was lost: give it up instead of killing another."""
        self.host.counters["poisoned"] += 1
        message = f"{pending.redeliveries} workers were lost while holding this request; it is not sent again"
        self._give_up(pending, "POISON", message, "poison")

    def _give_up(self, pending: Pending, code: str, message: str, reason: str) -> None:
        attempt = pending.attempt
        if attempt is None:
            self.fail(pending, code, message, reason)
            return
        pending.answered, pending.attempt = True, None  # a late reply to it is dropped
        attempt.lost(code, message, reason)

    def fail(self, pending: Pending, code: str, message: str, reason: str) -> None:
        """Answer a direct request the broker gives up on, release its slot, and keep it in the
        dead-letter queue."""
        self.host.admission.release(pending)
        self.host.metrics.answered(pending.service_frame, pending.received, outcome_label(code))
        self.send_client(pending.client, pending.service_frame, [svc.error_body(pending.body, code, message)])
        self.dead_letter(
            pending.service_frame, pending.body, reason, f"{code}: {message}", pending.client, pending.message_id
        )

    def reject(self, client: bytes, service_frame: bytes, body: list[bytes], code: str, message: str) -> None:
        """Refuse a request at once, and count why. It is not dead-lettered: the client has its
        answer in hand and nothing was lost (a flood of refusals must not flood the queue)."""
        self.host.dropped[code.lower().replace("_", "-")] += 1
        self.host.metrics.replied_at_once(service_frame, code)
        self.reply_error(client, service_frame, body, code, message)

    def reply_error(self, client: bytes, service_frame: bytes, body: list[bytes], code: str, message: str) -> None:
        self.send_client(client, service_frame, [svc.error_body(body, code, message)])

    def dead_letter(
        self,
        service_frame: bytes,
        body: list[bytes],
        reason: str,
        detail: str,
        client: bytes,
        message_id: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Keep a request the broker gave up on, and announce it on ``system/dead-letter``
        (with its trace id when known: a routed request's, or the envelope's ``traceparent``)."""
        self.host.counters[f"dead-letters-{reason}"] += 1
        service = service_frame.decode("utf-8", "replace")
        if (message_id is None or trace_id is None) and len(body) == 1:
            envelope = env.as_envelope(body[0])
            if envelope is not None:
                message_id = message_id or envelope["messageId"]
                trace_id = trace_id or _trace_id(envelope)
        log.warning(
            "dead letter from %s: %s (%s)",
            service,
            reason,
            detail,
            extra={"service": service, "traceId": trace_id, "messageId": message_id},
        )
        if self.host.dead_letters is not None:
            self.host.dead_letters.submit(service, list(body), reason, detail, message_id, client.hex())
        self.host.publish(
            "system/dead-letter",
            {"service": service, "reason": reason, "detail": detail, "messageId": message_id, "traceId": trace_id},
        )


def _trace_id(envelope: dict[str, Any]) -> str | None:
    """The trace a request's envelope belongs to: its valid ``traceparent``, else none known."""
    headers = envelope.get("headers") or {}
    parent = parse_traceparent(headers.get("traceparent"))
    return parent.trace_id if parent is not None else None
