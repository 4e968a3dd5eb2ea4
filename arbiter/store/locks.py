"""Read/write locks on named resources, with a lifetime and fencing tokens, shared by every broker
on the store.

A resource is held by many readers or by one writer. A lease lasts ``ttl`` unless renewed;
once it expires it no longer counts, so a holder that died frees the resource by itself. Every
grant draws the next fencing token of its resource (``lock_fences``, which never goes back, not
after expiry and not after release) and the lease carries it: a holder that paused past its
lease and woke up still believing it holds the lock carries a token older than the new
holder's, and a write fenced with it is refused (:func:`fence_ok`, ``fence=`` in
:mod:`.context`).

Deciding a grant and making it is one transaction that serialises on the resource: on SQLite
every write transaction takes the database's write lock first; on PostgreSQL the resource's
fence row is created if missing and locked (``SELECT ... FOR UPDATE``) before leases are looked
at, so two brokers asking at once are answered one after the other. Grants, releases and
expiries are logged (topic ``lock/<resource>/acquired|released|expired``) in the same
transaction; a renewal, which changes no holder, is not.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable

import peewee as pw

from arbiter.store import database as state
from arbiter.store import events, models
from arbiter.store.entries import BAD_REQUEST, NOT_FOUND, STALE_FENCE, StateError

Lock = models.DistributedLock
Fence = models.LockFence
clock: Callable[[], dt.datetime] = models.now  # tests move time by replacing it

MODES = ("read", "write")
RESOURCE = re.compile(r"[^\s/*\x00]{1,200}")  # a topic segment: no '/' or '*'
MAX_HOLDER = 255
AGGREGATE = "lock"


class LockError(StateError):
    """A lease that cannot be renewed: not held (NOT_FOUND) or not with this token (STALE_FENCE)."""


@dataclass(frozen=True)
class Lease:
    """A holder's lease on a resource, with the fencing token its grant drew."""

    resource: str
    holder: str
    mode: str
    token: int
    acquired_at: dt.datetime
    expires_at: dt.datetime

    @classmethod
    def of(cls, row: models.DistributedLock) -> Lease:
        return cls(row.resource_id, row.lock_holder, row.lock_type, int(row.token), row.acquired_at, row.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "holder": self.holder,
            "mode": self.mode,
            "token": self.token,
            "acquiredAt": events.iso(self.acquired_at),
            "expiresAt": events.iso(self.expires_at),
        }


# ---------------------------------------------------------------- checks


def _check_resource(resource: str) -> None:
    if not isinstance(resource, str) or not RESOURCE.fullmatch(resource):
        raise StateError(BAD_REQUEST, f"a resource is 1 to 200 characters without spaces, '/' or '*', not {resource!r}")


def _check_holder(holder: str) -> None:
    if not isinstance(holder, str) or not holder or len(holder) > MAX_HOLDER:
        raise StateError(BAD_REQUEST, f"a holder is 1 to {MAX_HOLDER} characters, not {holder!r}")


def _check_request(resource: str, holder: str, ttl: dt.timedelta) -> None:
    _check_resource(resource)
    _check_holder(holder)
    if not isinstance(ttl, dt.timedelta) or ttl <= dt.timedelta(0):
        raise StateError(BAD_REQUEST, "a lease's ttl must be positive")


# ---------------------------------------------------------------- the resource, serialised


def _postgres() -> bool:
    return isinstance(state.database.obj, pw.PostgresqlDatabase)


def _hold_resource(resource: str) -> int:
    """Serialise on the resource for the rest of the transaction; returns its last token."""
    Fence.insert(resource_id=resource, last_token=0).on_conflict_ignore().execute()
    query = Fence.select(Fence.last_token).where(Fence.resource_id == resource)
    if _postgres():
        query = query.for_update()
    return int(query.scalar() or 0)


def _leases(resource: str) -> list[models.DistributedLock]:
    return list(Lock.select().where(Lock.resource_id == resource).order_by(Lock.acquired_at, Lock.lock_holder))


def _event(lease: Lease, what: str) -> dict[str, Any]:
    return {
        "topic": f"lock/{lease.resource}/{what}",
        "event_type": what,
        "aggregate_type": AGGREGATE,
        "aggregate_id": lease.resource,
        "payload": lease.to_json(),
    }


def _live_leases(resource: str, now: dt.datetime, logged: list[dict[str, Any]]) -> list[Lease]:
    """The resource's leases that still count; expired ones are removed, each noted in ``logged``."""
    leases = [Lease.of(row) for row in _leases(resource)]
    expired = [lease for lease in leases if lease.expires_at <= now]
    for lease in expired:
        Lock.delete().where((Lock.resource_id == resource) & (Lock.lock_holder == lease.holder)).execute()
        logged.append(_event(lease, "expired"))
    return [lease for lease in leases if lease.expires_at > now]


def _transaction(operation: Callable[..., Any], *args: Any) -> Any:
    def attempt() -> Any:
        with state.writing():
            return operation(*args)

    return state.with_retries(attempt)


# ---------------------------------------------------------------- the operations


def acquire(resource: str, holder: str, mode: str, ttl: dt.timedelta) -> Lease | None:
    """Take a lease without waiting, or None when the resource is held against it: a write lease
    needs no other holder, a read lease no other writer. A holder asking again for the mode it
    holds renews its lease (same token); asking for the other mode is a new grant."""
    _check_request(resource, holder, ttl)
    if mode not in MODES:
        raise StateError(BAD_REQUEST, f"a lock's mode is read or write, not {mode!r}")
    return _transaction(_acquire, resource, holder, mode, ttl)


def _acquire(resource: str, holder: str, mode: str, ttl: dt.timedelta) -> Lease | None:
    last_token = _hold_resource(resource)
    now = clock()
    logged: list[dict[str, Any]] = []
    live = _live_leases(resource, now, logged)
    mine = next((lease for lease in live if lease.holder == holder), None)
    others = [lease for lease in live if lease.holder != holder]
    lease: Lease | None = None
    if mine is not None and mine.mode == mode:
        lease = _extend(mine, now + ttl)
    elif not others or (mode == "read" and all(other.mode == "read" for other in others)):
        lease = _grant(resource, holder, mode, last_token + 1, now, now + ttl)
        logged.append(_event(lease, "acquired"))
    events.append_many(logged)  # last: see events
    return lease


def _grant(resource: str, holder: str, mode: str, token: int, now: dt.datetime, until: dt.datetime) -> Lease:
    Fence.update(last_token=token).where(Fence.resource_id == resource).execute()
    values = {"lock_type": mode, "token": token, "acquired_at": now, "expires_at": until}
    Lock.insert(resource_id=resource, lock_holder=holder, **values).on_conflict(
        conflict_target=[Lock.resource_id, Lock.lock_holder],
        update={getattr(Lock, name): value for name, value in values.items()},
    ).execute()
    return Lease(resource, holder, mode, token, now, until)


def _extend(lease: Lease, until: dt.datetime) -> Lease:
    query = Lock.update(expires_at=until).where(
        (Lock.resource_id == lease.resource) & (Lock.lock_holder == lease.holder) & (Lock.token == lease.token)
    )
    query.execute()
    return Lease(lease.resource, lease.holder, lease.mode, lease.token, lease.acquired_at, until)


def renew(resource: str, holder: str, token: int, ttl: dt.timedelta) -> Lease:
    """Extend a live lease to ``ttl`` from now. Raises :class:`LockError`: NOT_FOUND when the
    holder holds no live lease on the resource (it expired: someone else may have it since),
    STALE_FENCE when the lease it holds has another token."""
    _check_request(resource, holder, ttl)
    return _transaction(_renew, resource, holder, token, ttl)


def _renew(resource: str, holder: str, token: int, ttl: dt.timedelta) -> Lease:
    _hold_resource(resource)
    now = clock()
    row = Lock.get_or_none((Lock.resource_id == resource) & (Lock.lock_holder == holder))
    if row is None or row.expires_at <= now:
        raise LockError(NOT_FOUND, f"{holder} holds no lease on {resource!r}")
    lease = Lease.of(row)
    if lease.token != token:
        raise LockError(STALE_FENCE, f"the lease of {holder} on {resource!r} has token {lease.token}, not {token}")
    return _extend(lease, now + ttl)


def release(resource: str, holder: str, token: int) -> bool:
    """Give a lease up; False when the holder held no live lease with this token (an expired one
    is removed all the same)."""
    _check_resource(resource)
    _check_holder(holder)
    return bool(_transaction(_release, resource, holder, token))


def _release(resource: str, holder: str, token: int) -> bool:
    _hold_resource(resource)
    row = Lock.get_or_none((Lock.resource_id == resource) & (Lock.lock_holder == holder) & (Lock.token == token))
    if row is None:
        return False
    lease = Lease.of(row)
    Lock.delete().where((Lock.resource_id == resource) & (Lock.lock_holder == holder)).execute()
    live = lease.expires_at > clock()
    events.append(**_event(lease, "released" if live else "expired"))
    return live


def holders(resource: str) -> list[Lease]:
    """The live leases on a resource, oldest first."""
    _check_resource(resource)
    now = clock()
    return [Lease.of(row) for row in _leases(resource) if row.expires_at > now]


def list_leases() -> list[Lease]:
    """Every live lease, by resource, oldest first."""
    rows = Lock.select().where(Lock.expires_at > clock()).order_by(Lock.resource_id, Lock.acquired_at)
    return [Lease.of(row) for row in rows]


def fence_ok(resource: str, token: int) -> bool:
    """Whether a write fenced with ``token`` may still land: no later token was granted."""
    last = Fence.select(Fence.last_token).where(Fence.resource_id == resource).scalar()
    return token >= int(last or 0)
