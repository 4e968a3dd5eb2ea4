"""MDP/0.1 clients for the Arbiter broker: synchronous :class:`Client` and asyncio :class:`AsyncClient`.

Both use a DEALER socket and speak the client side of ZeroMQ RFC 7 (``["", "MDPC01",
service, body...]``), with the Lazy Pirate pattern for reliability: when no reply comes
within ``timeout`` the socket is closed (dropping anything queued on it), a fresh one is
opened and the request is sent again, up to ``retries`` times, then :class:`RequestTimeout`
is raised. Because a request can therefore arrive more than once, envelope requests keep
their ``messageId`` across attempts and count them in ``metadata.retryCount``; workers use
the id to answer a duplicate from cache instead of running it twice.

Given several brokers (a list, or one string of endpoints separated by commas), a client fails
over: an attempt that gets no reply is sent again, the same ``messageId``, to the next broker of
the list, and the client stays with the broker that answered (the ZeroMQ guide's Freelance
client). ``client.stats`` counts the retries and the failovers (docs/DEPLOYMENT.md).

Typical use::

    with Client("tcp://127.0.0.1:5555") as client:
        reply = client.call("exec-automator", "analyze-document", {"documentPath": "rfp.pdf"})
        print(reply.result)
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import zmq
import zmq.asyncio

from arbiter.sdk.brokers import Endpoints, FailoverStats, Rotation, endpoint_list
from arbiter.sdk.curve import CurveKeys, connect
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01, MMI_SERVICE

Body = Union[bytes, str, Mapping[str, Any]]

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 2


class ClientError(Exception):
    """Base class for everything the client raises."""


class RequestTimeout(ClientError):
    """No reply after every attempt; the request may or may not have been executed."""

    def __init__(self, service: str, attempts: int, timeout: float) -> None:
        super().__init__(
            f"no reply from service '{service}' after {attempts} attempt(s) of {timeout:g}s each; "
            "is the broker running and does a worker serve this service?"
        )
        self.service = service
        self.attempts = attempts


@dataclass
class Reply:
    """One reply: the raw body frames plus convenient views of an envelope reply."""

    service: str
    frames: list[bytes]
    attempts: int = 1
    _parsed: Any = field(default=None, repr=False)
    _parsed_done: bool = field(default=False, repr=False)

    @property
    def body(self) -> bytes:
        return self.frames[0] if self.frames else b""

    @property
    def data(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        if not self._parsed_done:
            try:
                self._parsed = env.decode(self.body)
            except ValueError:
                self._parsed = None
            self._parsed_done = True
        return self._parsed

    @property
    def envelope(self) -> dict[str, Any] | None:
        data = self.data
        return data if isinstance(data, dict) and isinstance(data.get("payload"), dict) else None

    @property
    def payload(self) -> dict[str, Any]:
        envelope = self.envelope
        return envelope["payload"] if envelope else {}

    @property
    def ok(self) -> bool:
        """False for an error envelope; a non-envelope body counts as success (plain MDP)."""
        return self.payload.get("status", "success") != "error"

    @property
    def result(self) -> Any:
        return self.payload.get("result")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.payload.get("error") if not self.ok else None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class _Outgoing:
    """A request being attempted: its frames are rebuilt per attempt to count retries."""

    service: str
    body: bytes | None
    envelope: dict[str, Any] | None
    more: tuple[bytes, ...] = ()  # body frames after the first, sent unchanged

    @classmethod
    def of(cls, service: str, body: Body, more: Sequence[bytes] = ()) -> _Outgoing:
        rest = tuple(bytes(frame) for frame in more)
        if isinstance(body, Mapping):
            return cls(service, None, copy.deepcopy(dict(body)), rest)  # retries count on our copy
        return cls(service, body.encode() if isinstance(body, str) else bytes(body), None, rest)

    def frames(self, attempt: int) -> list[bytes]:
        if self.envelope is not None:
            if attempt > 0:
                env.mark_retry(self.envelope)
            body = env.encode(self.envelope)
        else:
            body = self.body or b""
        return [b"", MDPC01, self.service.encode(), body, *self.more]

    def matches(self, frames: list[bytes]) -> bool:
        """Is this reply ours? Stale replies (an earlier attempt's, a pipelined one) are skipped."""
        if len(frames) < 4 or frames[0] != b"" or frames[1] != MDPC01 or frames[2] != self.service.encode():
            return False
        if self.envelope is None:
            return True
        reply = env.as_envelope(frames[3])
        return reply is None or reply.get("correlationId") in (None, self.envelope.get("messageId"))


def build_request(
    service: str, command: str, parameters: Mapping[str, Any] | None, timeout: float, retries: int, **fields: Any
) -> dict[str, Any]:
    """An envelope whose expiry covers every attempt, so a retry is not refused as expired."""
    budget_ms = int(timeout * 1000 * (retries + 1))
    fields.setdefault("timeout_ms", budget_ms)
    return env.new_request(service, command, parameters, **fields)


class _Defaults:
    """What both clients share: the brokers they talk to and the defaults a request may override."""

    def __init__(
        self, endpoint: Endpoints, timeout: float, retries: int, source: str, curve: CurveKeys | None = None
    ) -> None:
        self.rotation = Rotation(endpoint_list(endpoint))
        self.timeout = timeout
        self.retries = retries
        self.source = source
        self.curve = curve if curve is not None else CurveKeys.from_env()  # a broker with security on

    @property
    def endpoint(self) -> str:
        """The broker the next attempt goes to."""
        return self.rotation.current

    @property
    def endpoints(self) -> list[str]:
        return self.rotation.endpoints

    @property
    def stats(self) -> FailoverStats:
        return self.rotation.stats

    def _limits(self, timeout: float | None, retries: int | None) -> tuple[float, int]:
        return (self.timeout if timeout is None else timeout, self.retries if retries is None else retries)

    def _envelope(
        self,
        service: str,
        command: str,
        parameters: Mapping[str, Any] | None,
        timeout: float,
        retries: int,
        fields: Mapping[str, Any],
    ) -> dict[str, Any]:
        return build_request(service, command, parameters, timeout, retries, **{"source": self.source, **fields})


class Client(_Defaults):
    """A synchronous MDP client with Lazy Pirate retries. Not thread-safe: one per thread."""

    def __init__(
        self,
        endpoint: Endpoints,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        source: str = "arbiter-client",
        context: zmq.Context | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        """``curve``: this client's keys for a broker with security on (else ``ARBITER_CURVE_KEY``
        and ``ARBITER_BROKER_KEY`` from the environment, when set)."""
        super().__init__(endpoint, timeout, retries, source, curve)
        self._ctx = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            connect(sock, self.endpoint, self.curve)
            self._socket = sock
        return self._socket

    def _reset(self) -> None:
        """Lazy Pirate: a socket that timed out may hold a half-sent request or a late reply; drop it."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        service: str,
        body: Body,
        timeout: float | None = None,
        retries: int | None = None,
        *,
        more_frames: Sequence[bytes] = (),
    ) -> Reply:
        """Send ``body`` (bytes as-is, a mapping as a JSON envelope) and wait for the reply.

        ``more_frames``: further body frames, for a body of several (MDP allows any number),
        sent unchanged after ``body`` on every attempt; only an envelope ``body`` counts retries."""
        timeout, retries = self._limits(timeout, retries)
        outgoing = _Outgoing.of(service, body, more_frames)
        for attempt in range(retries + 1):
            sock = self._connect()
            sock.send_multipart(outgoing.frames(attempt))
            frames = self._await_reply(sock, outgoing, timeout)
            if frames is not None:
                return Reply(service, frames[3:], attempts=attempt + 1)
            self._reset()
            if attempt < retries:
                self.rotation.retried()
        raise RequestTimeout(service, retries + 1, timeout)

    def _await_reply(self, sock: zmq.Socket, outgoing: _Outgoing, timeout: float) -> list[bytes] | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                continue
            frames = sock.recv_multipart()
            if outgoing.matches(frames):
                return frames
        return None

    def pipeline(
        self,
        service: str,
        bodies: Sequence[Mapping[str, Any]],
        timeout: float | None = None,
        retries: int | None = None,
    ) -> list[Reply]:
        """Send several envelopes at once and return their replies in request order.

        The DEALER does not wait between requests, so a worker with credit (or several
        workers) can run them concurrently. Replies are matched by ``correlationId``; on a
        timeout only the unanswered requests are re-sent, on a fresh socket.
        """
        timeout, retries = self._limits(timeout, retries)
        outgoing = [_Outgoing.of(service, body) for body in bodies]
        if any(o.envelope is None for o in outgoing):
            raise ValueError("pipelined bodies must be envelopes: replies are matched by correlationId")
        pending = {str(o.envelope["messageId"]): i for i, o in enumerate(outgoing) if o.envelope is not None}
        if len(pending) != len(outgoing):
            raise ValueError("pipelined envelopes need distinct messageIds")
        replies: list[Reply | None] = [None] * len(outgoing)
        for attempt in range(retries + 1):
            sock = self._connect()
            for index in pending.values():
                sock.send_multipart(outgoing[index].frames(attempt))
            self._collect(sock, service, pending, replies, timeout, attempt + 1)
            if not pending:
                return [r for r in replies if r is not None]
            self._reset()
            if attempt < retries:
                self.rotation.retried()
        raise RequestTimeout(service, retries + 1, timeout)

    def _collect(
        self,
        sock: zmq.Socket,
        service: str,
        pending: dict[str, int],
        replies: list[Reply | None],
        timeout: float,
        attempts: int,
    ) -> None:
        """Receive until every pending id is answered or the attempt's time is up."""
        deadline = time.monotonic() + timeout
        while pending and (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                continue
            frames = sock.recv_multipart()
            reply = env.as_envelope(frames[3]) if len(frames) >= 4 and frames[1] == MDPC01 else None
            index = pending.pop(str(reply.get("correlationId")), None) if reply else None
            if index is not None:
                replies[index] = Reply(service, frames[3:], attempts=attempts)

    def call(
        self,
        service: str,
        command: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        **fields: Any,
    ) -> Reply:
        """Build a request envelope for ``command`` and send it to ``service``."""
        timeout, retries = self._limits(timeout, retries)
        request = self._envelope(service, command, parameters, timeout, retries, fields)
        return self.request(service, request, timeout=timeout, retries=retries)

    def mmi(self, service: str, query: str = MMI_SERVICE, timeout: float | None = None) -> str:
        """Ask the broker's MMI (RFC 8): "200" when ``service`` has workers, "404" when not."""
        return self.request(query, service.encode(), timeout=timeout).text()

    def has_service(self, service: str, timeout: float | None = None) -> bool:
        return self.mmi(service, timeout=timeout) == "200"


class AsyncClient(_Defaults):
    """The asyncio twin of :class:`Client`; concurrent requests (``asyncio.gather``) run in parallel.

    Each request in flight has a DEALER socket of its own, taken from a pool of idle ones:
    Lazy Pirate's "close and reopen" then only ever discards that request's socket, never a
    neighbour's pending reply, and no reply can be mistaken for another's.
    """

    def __init__(
        self,
        endpoint: Endpoints,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        source: str = "arbiter-client",
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        super().__init__(endpoint, timeout, retries, source, curve)
        self._ctx = context or zmq.asyncio.Context.instance()
        self._idle: dict[str, list[zmq.asyncio.Socket]] = {}  # by broker
        self._open: set[zmq.asyncio.Socket] = set()

    def _take(self, endpoint: str) -> zmq.asyncio.Socket:
        idle = self._idle.setdefault(endpoint, [])
        if idle:
            return idle.pop()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        connect(sock, endpoint, self.curve)
        self._open.add(sock)
        return sock

    def _discard(self, sock: zmq.asyncio.Socket) -> None:
        self._open.discard(sock)
        sock.close(linger=0)

    def close(self) -> None:
        for sock in list(self._open):
            self._discard(sock)
        self._idle.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def request(
        self,
        service: str,
        body: Body,
        timeout: float | None = None,
        retries: int | None = None,
        *,
        more_frames: Sequence[bytes] = (),
    ) -> Reply:
        """As :meth:`Client.request`."""
        timeout, retries = self._limits(timeout, retries)
        outgoing = _Outgoing.of(service, body, more_frames)
        for attempt in range(retries + 1):
            endpoint = self.endpoint
            sock = self._take(endpoint)
            try:
                await sock.send_multipart(outgoing.frames(attempt))
                frames = await self._await_reply(sock, outgoing, timeout)
            except BaseException:  # cancelled or failed mid-request: the socket may hold a late reply
                self._discard(sock)
                raise
            if frames is not None:
                self._idle.setdefault(endpoint, []).append(sock)
                return Reply(service, frames[3:], attempts=attempt + 1)
            self._discard(sock)
            if attempt < retries and endpoint == self.endpoint:  # a concurrent request may have moved on
                self.rotation.retried()
            elif attempt < retries:
                self.stats.retries += 1
        raise RequestTimeout(service, retries + 1, timeout)

    async def _await_reply(self, sock: zmq.asyncio.Socket, outgoing: _Outgoing, timeout: float) -> list[bytes] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            if not await sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                continue
            frames = await sock.recv_multipart()
            if outgoing.matches(frames):
                return frames
        return None

    async def call(
        self,
        service: str,
        command: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        **fields: Any,
    ) -> Reply:
        timeout, retries = self._limits(timeout, retries)
        request = self._envelope(service, command, parameters, timeout, retries, fields)
        return await self.request(service, request, timeout=timeout, retries=retries)

    async def mmi(self, service: str, query: str = MMI_SERVICE, timeout: float | None = None) -> str:
        return (await self.request(query, service.encode(), timeout=timeout)).text()

    async def has_service(self, service: str, timeout: float | None = None) -> bool:
        return await self.mmi(service, timeout=timeout) == "200"
