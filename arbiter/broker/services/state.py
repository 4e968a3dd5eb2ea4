"""``arbiter.state``: shared context, locks and the event log (docs/STATE.md, docs/PROTOCOL.md §4.5).

Request: an envelope whose payload names an ``op`` and its fields:

- ``get`` / ``delete`` ``{scope, key}`` (``delete`` takes ``version`` to delete only that one);
- ``put`` ``{scope, key, value}`` with ``version`` (0: create only; N: compare-and-set),
  ``access`` (public, protected, private), ``ttlMs``, ``fence`` ``{resource, token}``;
  ``cas`` is ``put`` with ``version`` required;
- ``incr`` ``{scope, key, by}``; ``merge`` ``{scope, key, value}`` (a replicated value, merged);
- ``list`` ``{scope, prefix, limit}``;
- ``lock`` ``{resource, mode, ttlMs}``, ``renew`` ``{resource, token, ttlMs}``, ``unlock``
  ``{resource, token}``, ``locks`` ``{}``; ``log`` ``{since, topic, limit}``.

The caller is the envelope's ``source``, or with security on the identity the caller's key proved
(docs/SECURITY.md). Reply: a success envelope whose ``result`` is the entry
(with ``seq``, its place in the event log), the lease, the list or the events; errors
``NOT_FOUND``, ``CONFLICT`` (with ``current``), ``FORBIDDEN``, ``STALE_FENCE``, ``LOCKED`` (with
``holders``), ``BAD_REQUEST``, ``UNAVAILABLE`` (no keeper runs), ``STORE_UNAVAILABLE``.
Every change is published on ``state/<scope>/change``, a lock's on ``lock/<resource>/acquired``
and ``lock/<resource>/released``: the topics the event log keeps them under.
Command line: ``arbiter state get|put|cas|delete|incr|list``, ``arbiter locks list``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from arbiter.broker import messages
from arbiter.broker.services.base import ServiceHost
from arbiter.broker.workers import Pending

ACCESS = ("public", "protected", "private")
MODES = ("read", "write")
INT64 = (-(2**63), 2**63 - 1)  # the integers the store holds, the least and the greatest
MAX_TTL_MS = 100 * 365 * 86_400_000  # a century: any longer is a mistake, and dates end at the year 9999

# Each operation's fields: name -> (JSON types allowed, required).
_KEY = {"scope": ((str,), True), "key": ((str,), True)}
_FENCE = {"fence": ((dict,), False)}
_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "get": _KEY,
    "delete": {**_KEY, "version": ((int,), False), **_FENCE},
    "put": {
        **_KEY,
        "value": ((object,), True),
        "version": ((int,), False),
        "access": ((str,), False),
        "ttlMs": ((int,), False),
        **_FENCE,
    },
    "incr": {**_KEY, "by": ((int,), False), "ttlMs": ((int,), False)},
    "merge": {**_KEY, "value": ((dict,), True)},
    "list": {"scope": ((str,), True), "prefix": ((str,), False), "limit": ((int,), False)},
    "lock": {"resource": ((str,), True), "mode": ((str,), False), "ttlMs": ((int,), True)},
    "renew": {"resource": ((str,), True), "token": ((int,), True), "ttlMs": ((int,), True)},
    "unlock": {"resource": ((str,), True), "token": ((int,), True)},
    "locks": {},
    "log": {"since": ((int,), False), "topic": ((str,), False), "limit": ((int,), False)},
}
_FIELDS["cas"] = {**_FIELDS["put"], "version": ((int,), True)}


@dataclass(frozen=True)
class StateRequest:
    envelope: dict[str, Any]
    operation: dict[str, Any]  # what the keeper runs: op, caller and the checked fields


def _field(op: str, payload: dict[str, Any], name: str, kinds: tuple[type, ...], required: bool) -> Any:
    value = payload.get(name)
    if value is None:
        if required:
            raise messages.BadRequest("BAD_REQUEST", f"'{op}' needs payload.{name}")
        return None
    if object not in kinds and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join({"str": "a string", "int": "an integer", "dict": "an object"}[k.__name__] for k in kinds)
        raise messages.BadRequest("BAD_REQUEST", f"payload.{name} must be {wanted}")
    if int in kinds and type(value) is int and not INT64[0] <= value <= INT64[1]:
        raise messages.BadRequest("BAD_REQUEST", f"payload.{name} is out of range: a 64-bit integer")
    return value


def _check(op: str, fields: dict[str, Any]) -> None:
    """What the types alone do not say: the ranges and the closed sets."""
    for name in ("ttlMs", "limit"):
        if fields.get(name) is not None and fields[name] <= 0:
            raise messages.BadRequest("BAD_REQUEST", f"payload.{name} must be positive")
    if fields.get("ttlMs") is not None and fields["ttlMs"] > MAX_TTL_MS:
        raise messages.BadRequest("BAD_REQUEST", f"payload.ttlMs must be at most a century ({MAX_TTL_MS})")
    if fields.get("version") is not None and fields["version"] < 0:
        raise messages.BadRequest("BAD_REQUEST", "payload.version must be 0 (create only) or a version")
    if fields.get("access") is not None and fields["access"] not in ACCESS:
        raise messages.BadRequest("BAD_REQUEST", f"payload.access must be one of {', '.join(ACCESS)}")
    if fields.get("mode") is not None and fields["mode"] not in MODES:
        raise messages.BadRequest("BAD_REQUEST", "payload.mode must be read or write")
    fence = fields.get("fence")
    token = fence.get("token") if fence is not None else None
    if fence is not None and not (
        isinstance(fence.get("resource"), str) and type(token) is int and INT64[0] <= token <= INT64[1]
    ):
        raise messages.BadRequest("BAD_REQUEST", "payload.fence must be {resource: string, token: integer}")


class StateService:
    name = "arbiter.state"

    def read(self, body: list[bytes]) -> StateRequest:
        envelope = messages.read_envelope(body)
        payload = envelope.get("payload") or {}
        op = payload.get("op")
        if not isinstance(op, str) or op not in _FIELDS:
            raise messages.BadRequest("BAD_REQUEST", f"payload.op must be one of {', '.join(sorted(_FIELDS))}")
        fields = {name: _field(op, payload, name, *spec) for name, spec in _FIELDS[op].items()}
        _check(op, fields)
        caller = envelope.get("source")
        if not isinstance(caller, str) or not caller:
            raise messages.BadRequest("BAD_REQUEST", "the envelope's source names the caller: it must be set")
        operation = {"op": op, "caller": caller, **{k: v for k, v in fields.items() if v is not None}}
        return StateRequest(envelope, operation)

    def execute(self, host: ServiceHost, pending: Pending, request: StateRequest) -> None:
        def answer(frames: list[bytes]) -> None:
            data = orjson.loads(frames[0])
            error = data.get("error")
            host.metrics.state_op(request.operation["op"], None if error is None else str(error.get("code")))
            if error is not None:
                extra = {k: v for k, v in error.items() if k not in ("code", "message")}
                host.reply(pending, messages.error_body(request.envelope, error["code"], error["message"], **extra))
                return
            for event in data.get("events", ()):
                host.counters["state-changes"] += 1
                if host.wants(event["topic"]):
                    host.publish(event["topic"], event["data"])
            host.reply(pending, messages.success_body(request.envelope, data["result"]))

        operation = {**request.operation, "caller": host.caller(request.operation["caller"])}
        if not host.ask_keeper(pending, orjson.dumps(operation), answer):
            host.metrics.state_op(request.operation["op"], "UNAVAILABLE")
            raise messages.BadRequest("UNAVAILABLE", "shared state is not served: no state keeper runs (state_keepers)")
