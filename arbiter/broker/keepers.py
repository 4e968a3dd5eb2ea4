"""State keepers: shared context, locks and the event log, served off the broker's loop.

Every operation of ``arbiter.state`` is a transaction on the state store (a compare-and-set on
SQLite or PostgreSQL, so two brokers on one store stay correct); the loop must not wait for one.
So the broker starts keeper processes (``state_keepers`` in configs/broker.yaml, default 1):
helper processes (:mod:`arbiter.broker.helpers`) serving an internal service shown as
``arbiter.keep``. The broker checks the request (:mod:`arbiter.broker.services.state`), names
the caller, and hands the operation on; the keeper runs it and answers with the result and the
events to publish, which the broker puts on the bus (``state/<scope>/change``,
``lock/<resource>/acquired|released``) once the change is committed.

A request is one JSON object frame: ``{"op": ..., "caller": ..., ...the operation's fields}``;
the answer one JSON frame: ``{"result": ..., "events": [{"topic", "data"}]}`` or
``{"error": {"code", "message", ...}}``.

Run one by hand with ``python -m arbiter.broker.keepers ENDPOINT SERVICE ROOT DATABASE_URL``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson

from arbiter.broker import helpers
from arbiter.broker.helpers import HelperGroup, connectable, secret_name
from arbiter.broker.settings import Settings
from arbiter.broker.workers import Pending, WorkerPool
from arbiter.state.crdt import merge_json
from arbiter.store import context, events, locks
from arbiter.store import database as store
from arbiter.store.context import Entry, StateError

log = logging.getLogger("arbiter.broker")

SERVICE = "arbiter.keep"  # as status shows it; the registered name adds the secret
PURGE_EVERY_S = 30.0  # expired entries are removed (each an event) this often by each keeper


def for_project(count: int, settings: Settings, root: Path, database_url: str) -> HelperGroup:
    """The keeper processes of one broker (not started yet)."""
    service = secret_name(SERVICE)
    command = [sys.executable, "-m", "arbiter.broker.keepers", connectable(settings.frontend), service]
    command += [str(root), database_url, f"--heartbeat={settings.heartbeat_s}", f"--liveness={settings.liveness}"]
    return HelperGroup(SERVICE, count, service, command)


def ask(
    group: HelperGroup,
    pool: WorkerPool,
    pending: Pending,
    operation: bytes,
    done: Callable[[list[bytes]], None],
    fail: Callable[[str, str, str], None],
) -> bool:
    """Queue ``operation`` for a keeper on behalf of ``pending``; it waits for one (starting, or
    replacing one that died) until the request's deadline."""
    return group.ask(pool, pending, [operation], done, fail, "no state keeper answered in time", wait=True)


# -- the keeper process ---------------------------------------------------------------------------


def _ttl(request: Mapping[str, Any]) -> dt.timedelta | None:
    ms = request.get("ttlMs")
    return None if ms is None else dt.timedelta(milliseconds=ms)


def _fence(request: Mapping[str, Any]) -> tuple[str, int] | None:
    fence = request.get("fence")
    return None if fence is None else (fence["resource"], fence["token"])


def _change(entry: Entry | None, op: str, scope: str, key: str, seq: int, version: int | None = None) -> dict:
    """What the bus says of a change: a private entry's value stays off the bus (only its owner
    may read it), everything else is said in full."""
    data: dict[str, Any] = {"op": op, "scope": scope, "key": key, "seq": seq}
    if entry is not None:
        data.update(version=entry.version, owner=entry.owner, access=entry.access)
        if entry.access != "private":
            data["value"] = entry.value
    else:
        data["version"] = version
    return {"topic": f"state/{scope}/change", "data": data}


def _written(op: str, done: tuple[Entry, int]) -> dict[str, Any]:
    entry, seq = done
    return {"result": {**entry.to_json(), "seq": seq}, "events": [_change(entry, op, entry.scope, entry.key, seq)]}


def _get(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    return {"result": context.get(r["scope"], r["key"], caller).to_json()}


def _put(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    done = context.put(
        r["scope"],
        r["key"],
        r["value"],
        caller,
        version=r.get("version"),
        access=r.get("access"),
        ttl=_ttl(r),
        fence=_fence(r),
    )
    return _written("put", done)


def _delete(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    seq = context.delete(r["scope"], r["key"], caller, version=r.get("version"), fence=_fence(r))
    change = _change(None, "delete", r["scope"], r["key"], seq, r.get("version"))
    return {"result": {"scope": r["scope"], "key": r["key"], "deleted": True, "seq": seq}, "events": [change]}


def _incr(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    return _written("incr", context.incr(r["scope"], r["key"], caller, r.get("by", 1), ttl=_ttl(r)))


def _merge(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    return _written("merge", context.merge(r["scope"], r["key"], r["value"], caller, merge_json))


def _list(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    found = context.list_entries(r["scope"], caller, prefix=r.get("prefix"), limit=r.get("limit", 1000))
    return {"result": {"scope": r["scope"], "entries": [e.to_json() for e in found]}}


def _lock_event(lease: locks.Lease, what: str) -> dict[str, Any]:
    return {"topic": f"lock/{lease.resource}/{what}", "data": lease.to_json()}


def _lock(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    lease = locks.acquire(r["resource"], caller, r.get("mode", "write"), dt.timedelta(milliseconds=r["ttlMs"]))
    if lease is None:
        held = [h.to_json() for h in locks.holders(r["resource"])]
        return {"error": {"code": "LOCKED", "message": f"'{r['resource']}' is held", "holders": held}}
    return {"result": lease.to_json(), "events": [_lock_event(lease, "acquired")]}


def _renew(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    lease = locks.renew(r["resource"], caller, r["token"], dt.timedelta(milliseconds=r["ttlMs"]))
    return {"result": lease.to_json()}


def _unlock(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    released = locks.release(r["resource"], caller, r["token"])
    if not released:
        return {"result": {"released": False}}
    data = {"resource": r["resource"], "holder": caller, "token": r["token"]}
    return {"result": {"released": True}, "events": [{"topic": f"lock/{r['resource']}/released", "data": data}]}


def _locks(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    return {"result": {"leases": [lease.to_json() for lease in locks.list_leases()]}}


def _log(r: Mapping[str, Any], caller: str) -> dict[str, Any]:
    found = events.read(since=r.get("since", 0), topic=r.get("topic"), limit=r.get("limit", 1000))
    return {"result": {"events": [e.to_json() for e in found], "latest": events.latest_seq()}}


OPERATIONS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "get": _get,
    "put": _put,
    "cas": _put,
    "delete": _delete,
    "incr": _incr,
    "merge": _merge,
    "list": _list,
    "lock": _lock,
    "renew": _renew,
    "unlock": _unlock,
    "locks": _locks,
    "log": _log,
}


class Keeper:
    """One keeper's work: an operation in, its answer out; expired entries purged now and then."""

    def __init__(self) -> None:
        self.next_purge = time.monotonic() + PURGE_EVERY_S

    def serve(self, frames: list[bytes]) -> list[bytes]:
        request = orjson.loads(frames[0])
        try:
            answer = OPERATIONS[request["op"]](request, request["caller"])
        except StateError as exc:
            answer = {"error": exc.to_json()}
        except (TypeError, ValueError) as exc:  # a replicated value that does not merge with the stored one
            answer = {"error": {"code": "BAD_REQUEST", "message": str(exc)}}
        except store.StoreError as exc:
            answer = {"error": {"code": "STORE_UNAVAILABLE", "message": str(exc)}}
        self._purge_now_and_then()
        return [orjson.dumps(answer, default=str)]

    def _purge_now_and_then(self) -> None:
        if time.monotonic() < self.next_purge:
            return
        self.next_purge = time.monotonic() + PURGE_EVERY_S
        try:
            context.purge_expired()
        except (StateError, store.StoreError):
            log.exception("expired entries could not be purged; the next try comes later")


def main(argv: list[str]) -> int:
    options = [a for a in argv if a.startswith("--")]
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 4:
        print(__doc__.split("Run one by hand with ")[-1].strip(), file=sys.stderr)
        return 2
    endpoint, service, root, database_url = args
    settings = dict(option[2:].split("=", 1) for option in options)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s keeper %(levelname)s %(message)s")
    store.open_store(database_url, Path(root))
    # credit 1: one transaction at a time; a second would wait on the first's lock anyway
    helpers.serve(endpoint, service, settings, 1, Keeper().serve)
    store.close_store()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
