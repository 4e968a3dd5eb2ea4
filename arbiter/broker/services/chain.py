"""``arbiter.chain``: run a chain declared in ``rules/*.arb``, go on with a run, or cancel one
(docs/PROTOCOL.md §4.4).

Request: an envelope whose payload is one of ``{"chain": NAME, "params": {...}, "wait": true}``
(start a run; ``wait`` false answers at once with the run's id), ``{"resume": RUN_ID}`` (go on
with a run a stop cut short, or that failed: its completed steps stay done) and ``{"cancel":
RUN_ID}``.
Reply: a success envelope whose ``result`` is the run — ``runId``, ``chain``, ``status``,
``result`` (the last step's), ``results`` (by step), ``error``, and every step's ``name``,
``status``, ``plugin``, ``command``, ``tries``, ``ms``, ``result``, ``error``; errors
``UNKNOWN_CHAIN``, ``BAD_PARAMETERS``, ``UNKNOWN_RUN``, ``RUN_FINISHED``, ``RUN_RUNNING``.
A start is idempotent by the request's ``messageId``: the same start sent again (a client's
retry, through this broker or another on the same store) answers with the run the first started
(:mod:`arbiter.broker.run_starts`).
Command line: ``arbiter chain run NAME --param K=V``, ``arbiter chain resume|cancel RUN_ID``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from arbiter.broker import messages, tracing
from arbiter.broker.services.base import ServiceHost
from arbiter.broker.workers import Pending
from arbiter.dsl.chains import ChainPlan
from arbiter.orchestration.runner import ChainRun
from arbiter.store import runs
from arbiter.store.errors import StoreError

FINISHED_OK = ("completed", "compensated")


@dataclass(frozen=True)
class ChainRequest:
    envelope: dict[str, Any]
    action: str  # run | resume | cancel
    target: str  # the chain's name, or the run's id
    params: dict[str, Any]
    wait: bool


class ChainService:
    name = "arbiter.chain"

    def read(self, body: list[bytes]) -> ChainRequest:
        envelope = messages.read_envelope(body)
        payload = envelope.get("payload") or {}
        for action in ("chain", "resume", "cancel"):
            target = payload.get(action)
            if target is None:
                continue
            if not isinstance(target, str) or not target:
                raise messages.BadRequest("BAD_REQUEST", f"payload.{action} must be a non-empty string")
            params = payload.get("params") or {}
            if not isinstance(params, dict):
                raise messages.BadRequest("BAD_REQUEST", "payload.params must be an object")
            wait = payload.get("wait", True)
            if not isinstance(wait, bool):
                raise messages.BadRequest("BAD_REQUEST", "payload.wait must be true or false")
            return ChainRequest(envelope, "run" if action == "chain" else action, target, params, wait)
        raise messages.BadRequest("BAD_REQUEST", "payload must name a chain to run, or a run to resume or cancel")

    def execute(self, host: ServiceHost, pending: Pending, request: ChainRequest) -> None:
        if host.chains.detached:  # stopping: a run would neither be kept nor answered
            raise messages.BadRequest("SHUTTING_DOWN", "the broker is stopping")
        if request.action == "run":
            self._run(host, pending, request)
        elif request.action == "cancel":
            self._cancel(host, pending, request)
        else:
            self._resume(host, pending, request)

    def _run(self, host: ServiceHost, pending: Pending, request: ChainRequest) -> None:
        plans = host.snapshot.rules.chains
        plan = plans.get(request.target)
        if plan is None:
            close = difflib.get_close_matches(request.target, list(plans), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; chains: {', '.join(sorted(plans)) or 'none'}"
            raise messages.BadRequest("UNKNOWN_CHAIN", f"no chain '{request.target}'{hint}")
        params = _parameters(plan, request.params)
        message_id = request.envelope.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            self._answer(host, pending, request, self._start(host, plan, params, request, None))
            return

        def begin() -> ChainRun | None:
            if host.chains.detached:  # stopped while the store was read
                host.reply(pending, messages.error_body(request.envelope, "SHUTTING_DOWN", "the broker is stopping"))
                return None
            return self._start(host, plan, params, request, message_id)

        def found(run: ChainRun | dict[str, Any]) -> None:
            if isinstance(run, ChainRun):
                self._answer(host, pending, request, run)
            else:
                host.reply(pending, messages.success_body(request.envelope, run))

        host.chains.starts.start(message_id, request.wait, pending.deadline, begin, found)

    def _start(
        self, host: ServiceHost, plan: ChainPlan, params: dict[str, Any], request: ChainRequest, message_id: str | None
    ) -> ChainRun:
        span = tracing.begin_request(host.telemetry, self.name, request.envelope, {"arbiter.chain": plan.name})
        run = host.chains.start(plan, params, meta=tracing.run_meta(span), message_id=message_id)
        if host.telemetry is not None:
            attributes = {"arbiter.chain": plan.name, "arbiter.run_id": run.run_id}
            host.chains.when_done(
                run, lambda ended: tracing.end(host.telemetry, span, {**attributes, "arbiter.status": ended.status},
                                               None if ended.status in FINISHED_OK else ended.status)
            )  # fmt: skip
        return run

    def _cancel(self, host: ServiceHost, pending: Pending, request: ChainRequest) -> None:
        run = host.chains.cancel(request.target)
        if run is None:
            raise messages.BadRequest("UNKNOWN_RUN", f"no run '{request.target}' is going on on this broker")
        self._answer(host, pending, request, run)

    def _resume(self, host: ServiceHost, pending: Pending, request: ChainRequest) -> None:
        """Read the run once the store holds what this broker last handed it: a run that ended a
        moment ago is read as it ended, not as missing or still running."""
        self._refuse_running(host, request)

        def recorded() -> None:
            try:
                if host.chains.detached:  # stopped while the store was written
                    raise messages.BadRequest("SHUTTING_DOWN", "the broker is stopping")
                self._refuse_running(host, request)  # another resume may have started it meanwhile
                self._resume_stored(host, pending, request)
            except messages.BadRequest as exc:
                host.reply(pending, messages.error_body(request.envelope, exc.code, str(exc)))

        host.after_recorded(recorded)

    @staticmethod
    def _refuse_running(host: ServiceHost, request: ChainRequest) -> None:
        if request.target in host.chains.runs:
            raise messages.BadRequest("RUN_RUNNING", f"run '{request.target}' is going on already")

    def _resume_stored(self, host: ServiceHost, pending: Pending, request: ChainRequest) -> None:
        try:
            stored = runs.get(request.target)  # an operator's command: one read of the store
        except runs.RunNotFound as exc:
            raise messages.BadRequest("UNKNOWN_RUN", str(exc)) from None
        except StoreError as exc:
            raise messages.BadRequest("STORE_UNAVAILABLE", str(exc)) from None
        if stored["status"] in FINISHED_OK:
            raise messages.BadRequest("RUN_FINISHED", f"run '{stored['id']}' ended {stored['status']}")
        plan = host.snapshot.rules.chains.get(stored["name"])
        if plan is None:
            raise messages.BadRequest("UNKNOWN_CHAIN", f"the chain '{stored['name']}' of this run is no longer defined")
        self._answer(host, pending, request, host.chains.resume(stored, plan))

    def _answer(self, host: ServiceHost, pending: Pending, request: ChainRequest, run: ChainRun) -> None:
        if not request.wait or request.action == "cancel":
            host.reply(pending, messages.success_body(request.envelope, run.to_json()))
            return
        host.chains.when_done(
            run, lambda ended: host.reply(pending, messages.success_body(request.envelope, ended.to_json()))
        )


def _parameters(plan: ChainPlan, given: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters: those given, then the declared defaults; a parameter the chain does
    not declare, or one it needs without a default, is refused before anything runs."""
    declared = dict(plan.params)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise messages.BadRequest("BAD_PARAMETERS", f"chain '{plan.name}' has no parameter {', '.join(unknown)}")
    missing = [name for name, default in declared.items() if name not in given and default is None]
    if missing:
        raise messages.BadRequest("BAD_PARAMETERS", f"chain '{plan.name}' needs {', '.join(missing)}")
    return {**{k: v for k, v in declared.items() if v is not None}, **given}
