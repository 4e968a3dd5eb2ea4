"""Shared context's terms: what an entry is, why an operation is refused, and the checks every
request passes before it touches a row (scopes and keys become topic segments and column values,
so they are held to what both can carry). Split from :mod:`.context` so that module reads as the
operations alone.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson
import peewee as pw

from arbiter.store import database as state
from arbiter.store import events, models

NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
FORBIDDEN = "FORBIDDEN"
BAD_REQUEST = "BAD_REQUEST"
STALE_FENCE = "STALE_FENCE"

ACCESS_LEVELS = ("public", "protected", "private")
SCOPE = re.compile(r"global|(?:plugin|run|session):[^\s/*\x00]{1,200}")  # a topic segment: no '/' or '*'
MAX_KEY = 255  # the column's length on PostgreSQL


class StateError(Exception):
    """Why a shared-state operation was refused: ``code`` one of NOT_FOUND, CONFLICT, FORBIDDEN,
    BAD_REQUEST, STALE_FENCE; a CONFLICT carries the entry as it is now (None: there is none)."""

    def __init__(self, code: str, message: str, current: Entry | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.current = code, message, current

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.code == CONFLICT:
            data["current"] = None if self.current is None else self.current.to_json()
        return data


@dataclass(frozen=True)
class Entry:
    """One shared value with who owns it, who may touch it, its version and its lifetime."""

    scope: str
    key: str
    value: Any
    owner: str
    access: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None = None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "key": self.key,
            "value": self.value,
            "owner": self.owner,
            "access": self.access,
            "version": self.version,
            "createdAt": events.iso(self.created_at),
            "updatedAt": events.iso(self.updated_at),
            "expiresAt": events.iso(self.expires_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(
            data["scope"],
            data["key"],
            data["value"],
            data["owner"],
            data["access"],
            int(data["version"]),
            events.parse_iso(data["createdAt"]),  # type: ignore[arg-type]
            events.parse_iso(data["updatedAt"]),  # type: ignore[arg-type]
            events.parse_iso(data.get("expiresAt")),
        )


# ---------------------------------------------------------------- checks


def check_scope(scope: str) -> None:
    if not isinstance(scope, str) or not SCOPE.fullmatch(scope):
        raise StateError(BAD_REQUEST, f"scope {scope!r} is not global, plugin:<name>, run:<id> or session:<id>")


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or "\x00" in key:
        raise StateError(BAD_REQUEST, f"a key is 1 to {MAX_KEY} characters (no NUL), not {key!r}")


def check_caller(caller: str) -> None:
    if not isinstance(caller, str) or not caller:
        raise StateError(BAD_REQUEST, "a caller must say who it is")


def check_address(scope: str, key: str, caller: str) -> None:
    check_scope(scope)
    check_key(key)
    check_caller(caller)


def as_stored(value: Any) -> Any:
    """The value as it will read back (a tuple comes back a list): only what JSON holds, so the
    entry a write returns, the one read later and the one in the log are the same."""
    if value is None:
        raise StateError(BAD_REQUEST, "a value may not be null: delete the key instead")
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError as exc:
        raise StateError(BAD_REQUEST, f"the value is not JSON: {exc}") from None


def check_access(access: str | None) -> None:
    if access is not None and access not in ACCESS_LEVELS:
        raise StateError(BAD_REQUEST, f"access is one of {', '.join(ACCESS_LEVELS)}, not {access!r}")


def check_ttl(ttl: dt.timedelta | None) -> None:
    if ttl is not None and ttl <= dt.timedelta(0):
        raise StateError(BAD_REQUEST, "a ttl must be positive")


def check_fence(fence: tuple[str, int] | None) -> None:
    """Refuse a write fenced by a token older than the resource's latest grant. On PostgreSQL the
    counter's row is share-locked, so a grant made meanwhile waits for this write to commit: the
    write either lands before the new holder's token exists or is refused."""
    if fence is None:
        return
    resource, token = fence
    query = models.LockFence.select(models.LockFence.last_token).where(models.LockFence.resource_id == resource)
    if isinstance(state.database.obj, pw.PostgresqlDatabase):
        query = query.for_update("FOR SHARE")
    row = query.first()
    last = 0 if row is None else int(row.last_token)
    if token < last:
        raise StateError(STALE_FENCE, f"fencing token {token} of {resource!r} is stale: {last} was granted since")
