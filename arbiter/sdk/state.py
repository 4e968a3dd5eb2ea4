"""Shared state through the broker (``arbiter.state``): context entries in scopes, counters,
replicated values, locks with fencing tokens, and the event log.

    state = SharedState(client)                       # a Client of the SDK; its source is the caller
    entry = state.put("global", "release", {"tag": "v2"}, access="protected")
    state.cas("global", "release", {"tag": "v3"}, version=entry["version"])   # CONFLICT if it moved
    state.incr("plugin:jira-orchestrator", "tickets")
    with state.lock("deploy-production", ttl=30) as lease:
        state.put("global", "deployed", "v3", fence=lease)                   # refused once stale

A worker's handler shares state the same way with a client of its own
(``SharedState.connect(endpoint, source=plugin)``; one client per thread). Scopes are
``global``, ``plugin:<name>``, ``run:<id>`` and ``session:<id>``. Writes are not retried by the
client (a retried increment would count twice): a lost reply is a :class:`RequestTimeout`, and
the caller reads the entry to see whether it was written.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any, Iterator, Mapping

from arbiter.sdk.client import Client
from arbiter.wire import envelope as env

SERVICE = "arbiter.state"
LOCK_POLL_FIRST_S = 0.01
LOCK_POLL_MAX_S = 0.5


class StateError(Exception):
    """The broker refused the operation: ``code`` (NOT_FOUND, CONFLICT, FORBIDDEN, STALE_FENCE,
    LOCKED, BAD_REQUEST, UNAVAILABLE, ...) and the error's other fields (``current`` for a
    CONFLICT: the entry as it is now; ``holders`` for LOCKED)."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        self.code = str(error.get("code", "ERROR"))
        self.details = dict(error)
        super().__init__(f"{self.code}: {error.get('message', '')}")

    @property
    def current(self) -> dict[str, Any] | None:
        return self.details.get("current")


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, int(seconds * 1000))


def _fence(fence: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if fence is None else {"resource": fence["resource"], "token": fence["token"]}


class SharedState:
    """Shared state over one :class:`Client` (not thread-safe, like the client)."""

    def __init__(self, client: Client, timeout: float | None = None) -> None:
        self.client = client
        self.timeout = timeout

    @classmethod
    def connect(cls, endpoint: str, source: str, timeout: float = 5.0) -> SharedState:
        """Its own client, whose ``source`` is who the broker takes the caller to be."""
        return cls(Client(endpoint, timeout=timeout, retries=0, source=source))

    def close(self) -> None:
        self.client.close()

    def call(self, op: str, retries: int = 0, **fields: Any) -> Any:
        """Run one operation; its ``result``, or :class:`StateError`."""
        request = env.new_request(SERVICE, op, source=self.client.source, timeout_ms=_ms(self.timeout or 5.0) or 5000)
        request["payload"] = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
        reply = self.client.request(SERVICE, request, timeout=self.timeout, retries=retries)
        if not reply.ok:
            raise StateError(reply.error or {})
        return reply.result

    # -- context --------------------------------------------------------------------------

    def get(self, scope: str, key: str) -> dict[str, Any]:
        return self.call("get", retries=1, scope=scope, key=key)

    def value(self, scope: str, key: str, default: Any = None) -> Any:
        """The entry's value, or ``default`` when there is none."""
        try:
            return self.get(scope, key)["value"]
        except StateError as exc:
            if exc.code == "NOT_FOUND":
                return default
            raise

    def put(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        version: int | None = None,
        access: str | None = None,
        ttl: float | None = None,
        fence: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``value``; ``version`` 0 creates only, N writes only over version N."""
        fields = {"value": value, "version": version, "access": access, "ttlMs": _ms(ttl), "fence": _fence(fence)}
        return self.call("put", scope=scope, key=key, **fields)

    def cas(self, scope: str, key: str, value: Any, version: int, **options: Any) -> dict[str, Any]:
        return self.put(scope, key, value, version=version, **options)

    def delete(
        self, scope: str, key: str, *, version: int | None = None, fence: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.call("delete", scope=scope, key=key, version=version, fence=_fence(fence))

    def incr(self, scope: str, key: str, by: int = 1, ttl: float | None = None) -> dict[str, Any]:
        return self.call("incr", scope=scope, key=key, by=by, ttlMs=_ms(ttl))

    def merge(self, scope: str, key: str, value: Mapping[str, Any]) -> dict[str, Any]:
        """Merge a replicated value (``arbiter.state.crdt``'s ``to_json()``) into the stored one."""
        return self.call("merge", scope=scope, key=key, value=dict(value))

    def list(self, scope: str, prefix: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self.call("list", retries=1, scope=scope, prefix=prefix, limit=limit)["entries"]

    # -- locks ----------------------------------------------------------------------------

    def acquire(self, resource: str, mode: str = "write", ttl: float = 30.0, wait: float = 0.0) -> dict[str, Any]:
        """A lease on ``resource`` (its ``token`` fences writes), waiting up to ``wait`` seconds
        for the holders to let go; LOCKED when they did not."""
        deadline = time.monotonic() + wait
        pause = LOCK_POLL_FIRST_S
        while True:
            try:
                return self.call("lock", resource=resource, mode=mode, ttlMs=_ms(ttl))
            except StateError as exc:
                if exc.code != "LOCKED" or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(LOCK_POLL_MAX_S, pause * 2)

    def renew(self, lease: Mapping[str, Any], ttl: float = 30.0) -> dict[str, Any]:
        return self.call("renew", resource=lease["resource"], token=lease["token"], ttlMs=_ms(ttl))

    def release(self, lease: Mapping[str, Any]) -> bool:
        return bool(self.call("unlock", resource=lease["resource"], token=lease["token"])["released"])

    @contextlib.contextmanager
    def lock(self, resource: str, mode: str = "write", ttl: float = 30.0, wait: float = 10.0) -> Iterator[dict]:
        """``with state.lock(...) as lease:`` — released on the way out, whatever happened."""
        lease = self.acquire(resource, mode, ttl, wait)
        try:
            yield lease
        finally:
            self.release(lease)

    def locks(self) -> list[dict[str, Any]]:
        return self.call("locks", retries=1)["leases"]

    # -- the event log --------------------------------------------------------------------

    def log(self, since: int = 0, topic: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """Events after ``since`` (``{"events": [...], "latest": seq}``): a subscriber that missed
        some catches up from the last ``seq`` it saw."""
        return self.call("log", retries=1, since=since, topic=topic, limit=limit)


class ThreadLocalState:
    """One :class:`SharedState` per thread, for a worker's handlers (they run on a pool)."""

    def __init__(self, endpoint: str, source: str, timeout: float = 5.0) -> None:
        self.endpoint, self.source, self.timeout = endpoint, source, timeout
        self._local = threading.local()

    def __call__(self) -> SharedState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = SharedState.connect(self.endpoint, self.source, self.timeout)
        return state
